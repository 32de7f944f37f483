/*
 * Listening addresses: parsing "HOST:PORT", "[V6ADDR]:PORT" and
 * "unix:PATH", creating the bound listening socket, and printing a bound
 * socket's address back.  Names are never resolved: a server should not
 * depend on DNS to start, and what it binds must be exactly what the
 * operator wrote.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fpool-int.h"

#define UNIX_PREFIX	"unix:"
#define UNIX_PREFIX_LEN (sizeof(UNIX_PREFIX) - 1)

/* Write the canonical text of a socket address into buf. */
static void format_addr(const struct sockaddr_storage *ss, socklen_t len,
			char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	if (size == 0)
		return;
	switch (ss->ss_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const void *)ss;

		if (!inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host)))
			break;
		snprintf(buf, size, "%s:%u", host, ntohs(sin->sin_port));
		return;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		if (!inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host)))
			break;
		snprintf(buf, size, "[%s]:%u", host, ntohs(sin6->sin6_port));
		return;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const void *)ss;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		size_t n = len > off ? len - off : 0;

		/* sun_path need not be NUL-terminated when it is full, and
		 * the kernel's length may count the NUL or not. */
		if (n > sizeof(un->sun_path))
			n = sizeof(un->sun_path);
		n = strnlen(un->sun_path, n);
		snprintf(buf, size, UNIX_PREFIX "%.*s", (int)n, un->sun_path);
		return;
	}
	}
	snprintf(buf, size, "(unknown address)");
}

static int fail(const char **why, const char *what)
{
	if (why)
		*why = what;
	return -EINVAL;
}

static int parse_unix(const char *path, struct fpool__addr *a, const char **why)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
	size_t n = strlen(path);

	if (n == 0)
		return fail(why, "empty unix socket path");
	/* Keep room for the NUL: the path is used as a C string again to
	 * probe, unlink and print it. */
	if (n >= sizeof(un->sun_path))
		return fail(why, "unix socket path too long");
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n + 1);
	a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

static int parse_port(const char *s, in_port_t *port, const char **why)
{
	unsigned v;
	int r;

	if (*s == '\0')
		return fail(why, "missing port");
	r = fpool__parse_uint(s, 0, 65535, &v);
	if (r == -ERANGE)
		return fail(why, "port out of range (0-65535)");
	if (r < 0)
		return fail(why, "port is not a decimal number");
	*port = htons((in_port_t)v);
	return 0;
}

static int parse_inet6(const char *s, struct fpool__addr *a, const char **why)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	const char *end = strchr(s, ']');
	char host[INET6_ADDRSTRLEN];
	size_t n;

	if (end == NULL)
		return fail(why, "missing ']' after IPv6 address");
	if (end[1] != ':')
		return fail(why,
			    end[1] ? "expected ':' after ']'" : "missing port");
	n = (size_t)(end - s);
	if (n == 0 || n >= sizeof(host))
		return fail(why, "not a numeric IPv6 address");
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
		return fail(why, "not a numeric IPv6 address");
	sin6->sin6_family = AF_INET6;
	a->len = sizeof(*sin6);
	return parse_port(end + 2, &sin6->sin6_port, why);
}

static int parse_inet(const char *s, struct fpool__addr *a, const char **why)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	const char *colon = strchr(s, ':');
	char host[INET_ADDRSTRLEN];
	size_t n;

	if (colon == NULL)
		return fail(why, "missing port");
	if (strchr(colon + 1, ':'))
		return fail(why, "IPv6 address needs brackets");
	n = (size_t)(colon - s);
	sin->sin_family = AF_INET;
	a->len = sizeof(*sin);
	if (n == 0 || (n == 1 && s[0] == '*')) {
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	} else if (n == strlen("localhost") && memcmp(s, "localhost", n) == 0) {
		/* The one name we know without asking a resolver; it means
		 * IPv4 loopback, as for most servers. */
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		if (n >= sizeof(host))
			return fail(why, "not a numeric IPv4 address");
		memcpy(host, s, n);
		host[n] = '\0';
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return fail(why, "not a numeric IPv4 address");
	}
	return parse_port(colon + 1, &sin->sin_port, why);
}

int fpool__addr_parse(const char *s, struct fpool__addr *out, const char **why)
{
	struct fpool__addr a;
	int r;

	if (s == NULL || *s == '\0')
		return fail(why, "empty address");
	memset(&a, 0, sizeof(a));
	if (strncmp(s, UNIX_PREFIX, UNIX_PREFIX_LEN) == 0)
		r = parse_unix(s + UNIX_PREFIX_LEN, &a, why);
	else if (s[0] == '[')
		r = parse_inet6(s + 1, &a, why);
	else
		r = parse_inet(s, &a, why);
	if (r < 0)
		return r;
	format_addr(&a.ss, a.len, a.text, sizeof(a.text));
	*out = a;
	if (why)
		*why = NULL;
	return 0;
}

/*
 * Make room for a unix socket at `path`.  A socket file nobody listens on
 * any more (the last master was killed) is removed so a restart works;
 * one still in use is -EADDRINUSE; any other file is not ours to remove
 * and gives -EEXIST.
 *
 * The check and the unlink are not atomic; two masters starting at once
 * on one path are kept apart by the pidfile lock, not here.  A peer that
 * has bound but not yet called listen() also refuses connections and
 * would be taken for stale; that window is tiny.
 */
static int clear_stale_unix(const struct fpool__addr *a)
{
	const struct sockaddr_un *un = (const void *)&a->ss;
	struct stat st;
	int fd, r;

	if (lstat(un->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;

	/* Non-blocking so a live server with a full backlog (EAGAIN)
	 * cannot stall us; it is in use all the same. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
	r = r < 0 ? errno : 0;
	close(fd);

	switch (r) {
	case ECONNREFUSED:
		if (unlink(un->sun_path) < 0 && errno != ENOENT)
			return -errno;
		return 0;
	case ENOENT:
		return 0; /* removed meanwhile */
	case 0:
	case EAGAIN:
	case EPROTOTYPE: /* a live socket of another type */
		return -EADDRINUSE;
	default:
		return -r;
	}
}

int fpool__addr_listen(const struct fpool__addr *a, int backlog, int *fd)
{
	int family = a->ss.ss_family;
	int s, r, on = 1;

	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
		return -EAFNOSUPPORT;
	if (family == AF_UNIX) {
		r = clear_stale_unix(a);
		if (r < 0)
			return r;
	}
	s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -errno;
	/* A restarted master must not wait out TIME_WAIT of the last one. */
	if (family != AF_UNIX &&
	    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0)
		goto err;
	/* "[::]:80" means IPv6 only, so "0.0.0.0:80" can be bound beside
	 * it whatever net.ipv6.bindv6only says. */
	if (family == AF_INET6 &&
	    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) < 0)
		goto err;
	if (bind(s, (const struct sockaddr *)&a->ss, a->len) < 0)
		goto err;
	if (listen(s, backlog) < 0) {
		r = -errno;
		/* Do not leave a socket file behind that nobody serves. */
		if (family == AF_UNIX)
			unlink(((const struct sockaddr_un *)&a->ss)->sun_path);
		close(s);
		return r;
	}
	*fd = s;
	return 0;
err:
	r = -errno;
	close(s);
	return r;
}

void fpool__sockname(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (len == 0)
		return;
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		snprintf(buf, len, "(unknown address)");
		return;
	}
	format_addr(&ss, sl, buf, len);
}
