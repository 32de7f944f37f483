/*
 * What the built-in workers share (see common.h).  Public API only.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "common.h"

const char *wk_flag_value(int argc, char **argv, int *i, const char *name,
			  bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

/* --idle-timeout's value into *tv; one error line and -1 if bad. */
static int parse_idle_timeout(const char *who, const char *s,
			      struct timeval *tv)
{
	double sec;
	int err = fpool_duration_parse(s, &sec);

	if (err != 0) {
		fpool_log(FPOOL_LOG_ERROR, "%s: --idle-timeout '%s': %s", who,
			  s,
			  err == -ERANGE ? "out of range (more than 0, at "
					   "most a week)"
					 : "not a duration such as 30, 2.5s, "
					   "500ms or 1m");
		return -1;
	}
	*tv = wk_timeval(sec);
	if (tv->tv_sec == 0 && tv->tv_usec == 0)
		tv->tv_usec = 1; /* libevent would take 0 for "none" */
	return 0;
}

int wk_idle_timeout_args(const char *who, int argc, char **argv,
			 struct timeval *tv)
{
	static const char opt[] = "--idle-timeout";

	for (int i = 1; i < argc; i++) {
		bool missing = false;
		const char *value =
			wk_flag_value(argc, argv, &i, opt, &missing);

		if (missing) {
			fpool_log(FPOOL_LOG_ERROR,
				  "%s: %s needs a value, such as 30, 2.5s, "
				  "500ms or 1m",
				  who, opt);
			return -EINVAL;
		}
		if (value == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "%s: unknown worker argument '%s' (%s takes "
				  "%s SEC)",
				  who, argv[i], who, opt);
			return -EINVAL;
		}
		if (parse_idle_timeout(who, value, tv) != 0)
			return -EINVAL;
	}
	return 0;
}

int wk_accept_all(struct fpool_worker *w, const char *who,
		  struct fpool_acceptor **acceptors, size_t *n,
		  fpool_accept_cb cb, void *arg)
{
	size_t nfds;
	const int *fds = fpool_worker_listeners(w, &nfds);
	struct event_base *base = fpool_worker_base(w);

	for (size_t i = 0; i < nfds; i++) {
		int err = fpool_acceptor_new(&acceptors[*n], base, fds[i],
					     FPOOL_ACCEPT_CLOSE, cb, arg);

		if (err != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "%s: cannot accept on fd %d: %s", who, fds[i],
				  fpool_strerror(err));
			return err;
		}
		(*n)++;
	}
	return 0;
}

void wk_accept_stop(struct fpool_acceptor **acceptors, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		fpool_acceptor_free(acceptors[i]);
	*n = 0;
}

int wk_nodelay(int fd, const struct sockaddr *sa)
{
	int one = 1;

	if (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)
		return 0;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

struct timeval wk_timeval(double sec)
{
	struct timeval tv;

	tv.tv_sec = (time_t)sec;
	tv.tv_usec = (suseconds_t)((sec - (double)tv.tv_sec) * 1e6);
	return tv;
}

double wk_seconds(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}
