/*
 * Listening addresses: parsing "HOST:PORT", "[V6ADDR]:PORT" and
 * "unix:PATH", creating the bound listening socket, and printing a bound
 * socket's address back.  Names are never resolved: a server should not
 * depend on DNS to start, and what it binds must be exactly what the
 * operator wrote.
 *
 * Socket activation too: the listeners systemd (or systemd-socket-activate)
 * passes in LISTEN_FDS, taken by hand from the environment as
 * sd_listen_fds(3) would, so it works without libsystemd, and matched to
 * the addresses the operator asked for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int fpool__listen_refuse_new(int fd)
{
	/* One instruction: return 0, "keep no byte of the packet". */
	struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = { .len = 1, .filter = &drop };

	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) <
	    0)
		return -errno;
	return 0;
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

/* ---- Socket activation (sd_listen_fds(3), done by hand) ----------------- */

/* The first fd systemd passes (SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3
/* More than any unit would pass; a bigger LISTEN_FDS is taken as garbage. */
#define LISTEN_FDS_MAX 4096

/* A whole decimal number in [0, max].  0 or -EINVAL. */
static int parse_env_num(const char *s, long max, long *out)
{
	long v = 0;

	if (s == NULL || *s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return 0;
}

static void unset_listen_env(void)
{
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

/* Make an inherited fd ours: a socket, CLOEXEC and NONBLOCK.  0 or -errno
 * (logged). */
static int adopt_fd(int fd)
{
	struct stat st;
	int flags, err;

	if (fstat(fd, &st) < 0) {
		err = errno;
		fpool__log_errno(FPOOL_LOG_ERROR, err,
				 "socket activation: fd %d of LISTEN_FDS", fd);
		return -err;
	}
	if (!S_ISSOCK(st.st_mode)) {
		fpool_log(FPOOL_LOG_ERROR,
			  "socket activation: fd %d of LISTEN_FDS is not a "
			  "socket",
			  fd);
		return -ENOTSOCK;
	}
	flags = fcntl(fd, F_GETFD);
	if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
		goto err;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		goto err;
	return 0;
err:
	err = errno;
	fpool__log_errno(FPOOL_LOG_ERROR, err,
			 "socket activation: cannot set the flags of fd %d",
			 fd);
	return -err;
}

int fpool__listen_activated(int **fds, size_t *n)
{
	const char *pid_s = getenv("LISTEN_PID");
	const char *fds_s = getenv("LISTEN_FDS");
	long pid, count;
	int *v = NULL, r = 0;

	*fds = NULL;
	*n = 0;
	if (fds_s == NULL) {
		unset_listen_env();
		return 0; /* not activated */
	}
	if (parse_env_num(pid_s, INT32_MAX, &pid) != 0) {
		fpool_log(FPOOL_LOG_WARNING,
			  "socket activation: LISTEN_PID='%s' is not a pid; "
			  "LISTEN_FDS ignored",
			  pid_s ? pid_s : "(unset)");
		goto out;
	}
	if ((pid_t)pid != getpid()) {
		/* Meant for another process (e.g. our parent, when a
		 * wrapper forked us): not ours to take. */
		fpool_log(FPOOL_LOG_DEBUG,
			  "socket activation: LISTEN_PID=%ld is not us (pid "
			  "%d); LISTEN_FDS ignored",
			  pid, (int)getpid());
		goto out;
	}
	if (parse_env_num(fds_s, LISTEN_FDS_MAX, &count) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "socket activation: LISTEN_FDS='%s' is not a "
			  "number of fds (0..%d)",
			  fds_s, LISTEN_FDS_MAX);
		r = -EINVAL;
		goto out;
	}
	if (count == 0)
		goto out;
	v = calloc((size_t)count, sizeof(*v));
	if (v == NULL) {
		r = -ENOMEM;
		fpool_log(FPOOL_LOG_ERROR, "socket activation: out of memory");
		goto out;
	}
	for (long i = 0; i < count; i++) {
		v[i] = LISTEN_FDS_START + (int)i;
		if ((r = adopt_fd(v[i])) != 0) {
			free(v);
			goto out;
		}
	}
	*fds = v;
	*n = (size_t)count;
out:
	/* Workers, and whatever they exec, must not take them again. */
	unset_listen_env();
	return r;
}

int fpool__addr_from_fd(int fd, struct fpool__addr *a)
{
	memset(a, 0, sizeof(*a));
	a->len = sizeof(a->ss);
	if (getsockname(fd, (struct sockaddr *)&a->ss, &a->len) < 0)
		return -errno;
	format_addr(&a->ss, a->len, a->text, sizeof(a->text));
	return 0;
}

/* The path of a unix address (a->len bytes), NUL-terminated in buf; an
 * abstract name starts with '@'. */
static void unix_path(const struct fpool__addr *a, char *buf, size_t size)
{
	const struct sockaddr_un *un = (const void *)&a->ss;
	size_t off = offsetof(struct sockaddr_un, sun_path);
	size_t n = a->len > off ? a->len - off : 0;

	if (n > sizeof(un->sun_path))
		n = sizeof(un->sun_path);
	if (n > 0 && un->sun_path[0] == '\0') {
		snprintf(buf, size, "@%.*s", (int)(n - 1), un->sun_path + 1);
		return;
	}
	n = strnlen(un->sun_path, n);
	snprintf(buf, size, "%.*s", (int)n, un->sun_path);
}

/* An IPv6 socket `b` serves IPv4 address `a`: it is bound to a's
 * v4-mapped address (::ffff:A), or to [::] without IPV6_V6ONLY (a
 * dual-stack socket, systemd's ListenStream=PORT) and a is 0.0.0.0. */
static bool v6_serves_v4(int fd, const struct sockaddr_in *a,
			 const struct sockaddr_in6 *b)
{
	int v6only = 1;
	socklen_t len = sizeof(v6only);

	if (a->sin_port != b->sin6_port)
		return false;
	if (IN6_IS_ADDR_V4MAPPED(&b->sin6_addr))
		return memcmp(&b->sin6_addr.s6_addr[12], &a->sin_addr, 4) == 0;
	if (!IN6_IS_ADDR_UNSPECIFIED(&b->sin6_addr) ||
	    a->sin_addr.s_addr != htonl(INADDR_ANY))
		return false;
	if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) < 0)
		return false;
	return v6only == 0;
}

bool fpool__listen_matches(int fd, const struct fpool__addr *a)
{
	struct fpool__addr got;
	int type = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_STREAM || fpool__addr_from_fd(fd, &got) != 0)
		return false;
	switch (a->ss.ss_family) {
	case AF_INET: {
		const struct sockaddr_in *x = (const void *)&a->ss;
		const struct sockaddr_in *y = (const void *)&got.ss;

		if (got.ss.ss_family == AF_INET6)
			return v6_serves_v4(fd, x, (const void *)&got.ss);
		return got.ss.ss_family == AF_INET &&
		       x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *x = (const void *)&a->ss;
		const struct sockaddr_in6 *y = (const void *)&got.ss;

		return got.ss.ss_family == AF_INET6 &&
		       x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr,
			      sizeof(x->sin6_addr)) == 0;
	}
	case AF_UNIX: {
		char want[sizeof(struct sockaddr_un)], have[sizeof(want)];

		if (got.ss.ss_family != AF_UNIX)
			return false;
		unix_path(a, want, sizeof(want));
		unix_path(&got, have, sizeof(have));
		return want[0] != '\0' && strcmp(want, have) == 0;
	}
	}
	return false;
}

/*
 * No worker will be started again: stop taking new connections, so that
 * none is queued where no one will accept it.  A queued connection is
 * reset when the last copy of its listener closes, and the workers close
 * theirs one after the other: the clients of the first to stop are told
 * "Connection: close", reconnect, and would be queued on the socket a
 * worker that has not stopped yet is about to close (a bench run saw 17 of
 * 32 such reconnects reset).  So a TCP socket the master made first stops
 * taking connections for all the processes at once, while the workers
 * accept what is already queued; then the master closes its copy, and
 * once the workers close theirs, clients are refused.  A socket passed in
 * (systemd's) is not ours to change: it must queue connections for the
 * next instance of the service.
 */
void fpool__listeners_stop(struct fpool__listener *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct fpool__listener *l = &v[i];
		int err;

		if (l->fd < 0)
			continue;
		if (l->tcp_owned && (err = fpool__listen_refuse_new(l->fd)) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, -err,
					 "listener %s: cannot stop new "
					 "connections before the workers stop",
					 l->addr.text);
		if (close(l->fd) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "closing listener %s", l->addr.text);
		l->fd = -1;
	}
}
