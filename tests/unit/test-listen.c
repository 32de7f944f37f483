/*
 * Unit tests for listen.c: parsing listening addresses, binding them
 * (ephemeral ports, a port in use, stale and live unix sockets, a file
 * that is not a socket) and printing a bound socket's address.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fpool-int.h"
#include "unit.h"

static void test_parse_good(void **state)
{
	static const struct {
		const char *s;
		int family;
		const char *text;
	} cases[] = {
		{ "127.0.0.1:8080", AF_INET, "127.0.0.1:8080" },
		{ ":8080", AF_INET, "0.0.0.0:8080" },
		{ "*:80", AF_INET, "0.0.0.0:80" },
		{ "0.0.0.0:0", AF_INET, "0.0.0.0:0" },
		{ "localhost:1", AF_INET, "127.0.0.1:1" },
		{ "10.1.2.3:65535", AF_INET, "10.1.2.3:65535" },
		{ "127.0.0.1:00080", AF_INET, "127.0.0.1:80" },
		{ "[::1]:8080", AF_INET6, "[::1]:8080" },
		{ "[::]:0", AF_INET6, "[::]:0" },
		{ "[2001:DB8:0:0::1]:443", AF_INET6, "[2001:db8::1]:443" },
		{ "[::ffff:10.0.0.1]:9", AF_INET6, "[::ffff:10.0.0.1]:9" },
		{ "unix:/tmp/a.sock", AF_UNIX, "unix:/tmp/a.sock" },
		{ "unix:rel/a.sock", AF_UNIX, "unix:rel/a.sock" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		struct fpool__addr a;
		const char *why = "not reset";
		int r = fpool__addr_parse(cases[i].s, &a, &why);

		if (r != 0)
			fail_msg("\"%s\": %d (%s)", cases[i].s, r, why);
		assert_null(why);
		assert_int_equal(a.ss.ss_family, cases[i].family);
		assert_string_equal(a.text, cases[i].text);
	}
}

static void test_parse_details(void **state)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;
	const struct sockaddr_un *un;
	struct fpool__addr a;

	(void)state;
	assert_int_equal(fpool__addr_parse("127.0.0.1:8080", &a, NULL), 0);
	sin = (const void *)&a.ss;
	assert_int_equal(a.len, sizeof(*sin));
	assert_int_equal(ntohs(sin->sin_port), 8080);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);

	assert_int_equal(fpool__addr_parse("*:80", &a, NULL), 0);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), INADDR_ANY);

	assert_int_equal(fpool__addr_parse("[::1]:443", &a, NULL), 0);
	sin6 = (const void *)&a.ss;
	assert_int_equal(a.len, sizeof(*sin6));
	assert_int_equal(ntohs(sin6->sin6_port), 443);
	assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

	assert_int_equal(fpool__addr_parse("unix:/tmp/a.sock", &a, NULL), 0);
	un = (const void *)&a.ss;
	assert_string_equal(un->sun_path, "/tmp/a.sock");
	assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) +
					sizeof("/tmp/a.sock"));
}

static void test_parse_bad(void **state)
{
	/* A path one byte too long for sun_path (which needs its NUL). */
	char long_path[sizeof("unix:") +
		       sizeof(((struct sockaddr_un *)0)->sun_path)];
	static const struct {
		const char *s;
		const char *why; /* NULL: any reason */
	} cases[] = {
		{ "", "empty address" },
		{ "127.0.0.1", "missing port" },
		{ "127.0.0.1:", "missing port" },
		{ "127.0.0.1:65536", "port out of range (0-65535)" },
		{ "127.0.0.1:99999999999", "port out of range (0-65535)" },
		{ "127.0.0.1:-1", NULL },
		{ "127.0.0.1:+1", NULL },
		{ "127.0.0.1:80x", NULL },
		{ "127.0.0.1: 80", NULL },
		{ "127.0.0.1:0x50", NULL },
		{ "999.1.1.1:80", "not a numeric IPv4 address" },
		{ "1.2.3:80", "not a numeric IPv4 address" },
		{ "example.com:80", "not a numeric IPv4 address" },
		{ "LOCALHOST:80", "not a numeric IPv4 address" },
		{ " 127.0.0.1:80", "not a numeric IPv4 address" },
		{ "**:80", "not a numeric IPv4 address" },
		{ "::1:80", NULL },
		{ "[::1:80", NULL },
		{ "[::1]", "missing port" },
		{ "[::1]:", "missing port" },
		{ "[::1]80", NULL },
		{ "[::1]:65536", "port out of range (0-65535)" },
		{ "[zz]:80", "not a numeric IPv6 address" },
		{ "[]:80", "not a numeric IPv6 address" },
		{ "[127.0.0.1]:80", "not a numeric IPv6 address" },
		{ "[fe80::1%lo]:80", "not a numeric IPv6 address" },
		{ "unix:", "empty unix socket path" },
		{ NULL, "unix socket path too long" }, /* long_path */
	};
	size_t i;

	(void)state;
	memcpy(long_path, "unix:", 5);
	memset(long_path + 5, 'a', sizeof(long_path) - 6);
	long_path[sizeof(long_path) - 1] = '\0';

	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		const char *s = cases[i].s ? cases[i].s : long_path;
		struct fpool__addr a;
		const char *why = NULL;
		int r;

		memset(&a, 0x5a, sizeof(a));
		r = fpool__addr_parse(s, &a, &why);
		if (r != -EINVAL || why == NULL)
			fail_msg("\"%s\": %d, want -EINVAL and a reason", s, r);
		if (cases[i].why && strcmp(why, cases[i].why) != 0)
			fail_msg("\"%s\": \"%s\", want \"%s\"", s, why,
				 cases[i].why);
		/* A failed parse leaves *out alone. */
		assert_int_equal((unsigned char)a.text[0], 0x5a);
	}
	assert_int_equal(
		fpool__addr_parse(NULL, &(struct fpool__addr){ 0 }, NULL),
		-EINVAL);
}

static void test_parse_longest_unix(void **state)
{
	char s[sizeof("unix:") + sizeof(((struct sockaddr_un *)0)->sun_path) -
	       1];
	struct fpool__addr a;

	(void)state;
	/* The longest path that fits sun_path with its NUL. */
	memcpy(s, "unix:", 5);
	memset(s + 5, 'b', sizeof(s) - 6);
	s[sizeof(s) - 1] = '\0';
	assert_int_equal(fpool__addr_parse(s, &a, NULL), 0);
	assert_string_equal(a.text, s);
}

/* Bind `text` (which must parse) and return the result of listening. */
static int listen_on(const char *text, int *fd)
{
	struct fpool__addr a;

	assert_int_equal(fpool__addr_parse(text, &a, NULL), 0);
	return fpool__addr_listen(&a, 16, fd);
}

static void check_listening_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	int fdfl = fcntl(fd, F_GETFD);
	int acc = 0;
	socklen_t len = sizeof(acc);

	assert_true(fl >= 0 && (fl & O_NONBLOCK));
	assert_true(fdfl >= 0 && (fdfl & FD_CLOEXEC));
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len),
			 0);
	assert_int_equal(acc, 1);
}

static void test_tcp_ephemeral_and_in_use(void **state)
{
	char name[128], copy[128];
	int fd = -1, fd2 = -1, on = 0;
	socklen_t len = sizeof(on);
	unsigned port;

	(void)state;
	assert_int_equal(listen_on("127.0.0.1:0", &fd), 0);
	check_listening_flags(fd);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, &len),
			 0);
	assert_int_equal(on, 1);

	fpool__sockname(fd, name, sizeof(name));
	assert_int_equal(strncmp(name, "127.0.0.1:", 10), 0);
	assert_int_equal(fpool__parse_uint(name + 10, 1, 65535, &port), 0);

	/* The same address again: the port is taken. */
	snprintf(copy, sizeof(copy), "%s", name);
	fd2 = 12345;
	assert_int_equal(listen_on(copy, &fd2), -EADDRINUSE);
	assert_int_equal(fd2, 12345);

	close(fd);
}

static void test_tcp6(void **state)
{
	char name[128], v4[64];
	int fd = -1, fd4 = -1, r, on = 0;
	socklen_t len = sizeof(on);
	unsigned port;

	(void)state;
	r = listen_on("[::1]:0", &fd);
	if (r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT) {
		skip(); /* no IPv6 loopback here */
		return;
	}
	assert_int_equal(r, 0);
	check_listening_flags(fd);
	fpool__sockname(fd, name, sizeof(name));
	assert_int_equal(strncmp(name, "[::1]:", 6), 0);
	assert_int_equal(fpool__parse_uint(name + 6, 1, 65535, &port), 0);
	close(fd);

	/* "[::]:N" must leave IPv4 port N free whatever the sysctl says
	 * (a specific address such as ::1 is always IPv6 only, so this
	 * needs the wildcard). */
	assert_int_equal(listen_on("[::]:0", &fd), 0);
	assert_int_equal(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len),
			 0);
	assert_int_equal(on, 1);
	fpool__sockname(fd, name, sizeof(name));
	assert_int_equal(strncmp(name, "[::]:", 5), 0);
	assert_int_equal(fpool__parse_uint(name + 5, 1, 65535, &port), 0);
	snprintf(v4, sizeof(v4), "127.0.0.1:%u", port);
	/* A dual-stack socket would make this -EADDRINUSE. */
	assert_int_equal(listen_on(v4, &fd4), 0);
	close(fd4);
	close(fd);
}

static void test_sockname_errors(void **state)
{
	char small[6];
	char buf[64];
	int fd = -1;

	(void)state;
	fpool__sockname(-1, buf, sizeof(buf));
	assert_string_equal(buf, "(unknown address)");

	assert_int_equal(listen_on("127.0.0.1:0", &fd), 0);
	fpool__sockname(fd, small, sizeof(small));
	assert_string_equal(small, "127.0"); /* truncated, terminated */
	buf[0] = 'x';
	fpool__sockname(fd, buf, 0);
	assert_int_equal(buf[0], 'x');
	close(fd);
}

/* A temporary directory for unix socket files. */
static int tmp_setup(void **state)
{
	return tmp_setup_named(state, "s.sock");
}

/* Whether something accepts connections at the unix socket `path`. */
static bool unix_alive(const char *path)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	assert_true(fd >= 0);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	ok = connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0;
	close(fd);
	return ok;
}

static void test_unix_fresh_and_live(void **state)
{
	struct tmp *t = *state;
	struct stat st;
	char name[160];
	int fd = -1, fd2 = 12345;

	assert_int_equal(listen_on(t->addr, &fd), 0);
	check_listening_flags(fd);
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	fpool__sockname(fd, name, sizeof(name));
	assert_string_equal(name, t->addr);

	/* A live socket is never taken over. */
	assert_int_equal(listen_on(t->addr, &fd2), -EADDRINUSE);
	assert_int_equal(fd2, 12345);
	assert_true(unix_alive(t->path));
	close(fd);
}

static void test_unix_stale(void **state)
{
	struct tmp *t = *state;
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int old, fd = -1;

	/* What a killed master leaves: a socket file nobody listens on. */
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", t->path);
	old = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(old >= 0);
	assert_int_equal(bind(old, (struct sockaddr *)&un, sizeof(un)), 0);
	close(old);
	assert_false(unix_alive(t->path));

	assert_int_equal(listen_on(t->addr, &fd), 0);
	assert_true(unix_alive(t->path));
	close(fd);
}

static void test_unix_not_a_socket(void **state)
{
	struct tmp *t = *state;
	struct stat st;
	int f, fd = 12345;

	f = open(t->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(f >= 0);
	assert_int_equal(write(f, "keep", 4), 4);
	close(f);

	assert_int_equal(listen_on(t->addr, &fd), -EEXIST);
	assert_int_equal(fd, 12345);
	/* The file is still there, untouched. */
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 4);
}

static void test_unix_no_dir(void **state)
{
	struct tmp *t = *state;
	char addr[200];
	int fd = 12345;

	snprintf(addr, sizeof(addr), "unix:%s/missing/s.sock", t->dir);
	assert_int_equal(listen_on(addr, &fd), -ENOENT);
	assert_int_equal(fd, 12345);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_details),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_longest_unix),
		cmocka_unit_test(test_tcp_ephemeral_and_in_use),
		cmocka_unit_test(test_tcp6),
		cmocka_unit_test(test_sockname_errors),
		cmocka_unit_test_setup_teardown(test_unix_fresh_and_live,
						tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_unix_stale, tmp_setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_unix_not_a_socket,
						tmp_setup, tmp_teardown),
		cmocka_unit_test_setup_teardown(test_unix_no_dir, tmp_setup,
						tmp_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
