/*
 * bare-http: forkpool's http worker (workers/http.c and workers/http/,
 * llhttp included, compiled in here) in N processes forked after one
 * listen() on a shared socket, without forkpool: no master, no channel, no
 * heartbeats, no shared-memory activity, no respawn.  The public calls the
 * worker makes are implemented below in the plainest way (an acceptor is
 * an EV_READ event that accepts up to 64 connections per wakeup, as
 * forkpool's does; the request counter and the activity string stay in
 * the process).  It is the "zero framework overhead" baseline of
 * scripts/bench for the http worker's own HTTP path, as bare-evhttp is
 * for the evhttp one the worker had before.
 *
 *   bare-http [-w N] [-b HOST:PORT]        (default: 2, 127.0.0.1:8080)
 *
 * The parent and its signals: bench/bare.h.
 */
#include <stdarg.h>
#include <sys/prctl.h>

#include "../workers/http.c"
#include "bare.h"

#define ACCEPT_BATCH 64

struct fpool_worker {
	struct event_base *base;
	int listeners[1];
	unsigned id;
	pid_t pid;
	void *data;
	uint64_t requests;
	char activity[256];
};

struct fpool_acceptor {
	struct event *ev;
	int fd;
	fpool_accept_cb cb;
	void *arg;
};

/* ---- The public calls the worker makes -------------------------------- */

void fpool_log(enum fpool_log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level < FPOOL_LOG_WARNING)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "bare-http[%d]: ", (int)getpid());
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

void fpool_worker_count_requests(struct fpool_worker *w, uint64_t n)
{
	w->requests += n;
}

void fpool_worker_set_activity(struct fpool_worker *w, const char *fmt, ...)
{
	va_list ap;

	if (fmt == NULL) {
		w->activity[0] = '\0';
		return;
	}
	va_start(ap, fmt);
	vsnprintf(w->activity, sizeof(w->activity), fmt, ap);
	va_end(ap);
}

unsigned fpool_worker_id(const struct fpool_worker *w)
{
	return w->id;
}

pid_t fpool_worker_pid(const struct fpool_worker *w)
{
	return w->pid;
}

struct event_base *fpool_worker_base(struct fpool_worker *w)
{
	return w->base;
}

const int *fpool_worker_listeners(const struct fpool_worker *w, size_t *n)
{
	*n = 1;
	return w->listeners;
}

void fpool_worker_set_data(struct fpool_worker *w, void *d)
{
	w->data = d;
}

void *fpool_worker_data(const struct fpool_worker *w)
{
	return w->data;
}

int fpool_worker_loop(struct fpool_worker *w)
{
	return event_base_dispatch(w->base) < 0 ? -EIO : 0;
}

static void bare_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct fpool_acceptor *a = arg;

	(void)what;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				fprintf(stderr, "bare-http: accept: %s\n",
					strerror(errno));
			return;
		}
		a->cb(a, fd, (struct sockaddr *)&ss, len, a->arg);
	}
}

int fpool_acceptor_new(struct fpool_acceptor **out, struct event_base *base,
		       int fd, unsigned flags, fpool_accept_cb cb, void *arg)
{
	struct fpool_acceptor *a = calloc(1, sizeof(*a));

	(void)flags;
	*out = NULL;
	if (a == NULL)
		return -ENOMEM;
	a->fd = fd;
	a->cb = cb;
	a->arg = arg;
	a->ev = event_new(base, fd, EV_READ | EV_PERSIST, bare_accept_cb, a);
	if (a->ev == NULL || event_add(a->ev, NULL) != 0) {
		if (a->ev != NULL)
			event_free(a->ev);
		free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void fpool_acceptor_free(struct fpool_acceptor *a)
{
	if (a == NULL)
		return;
	event_free(a->ev);
	close(a->fd);
	free(a);
}

int fpool_duration_parse(const char *s, double *seconds)
{
	char *end;

	errno = 0;
	*seconds = strtod(s, &end);
	return errno != 0 || end == s || *end != '\0' || *seconds <= 0 ? -EINVAL
								       : 0;
}

const char *fpool_strerror(int err)
{
	return strerror(err < 0 ? -err : err);
}

/* ---- The processes ---------------------------------------------------- */

static int child(int fd, unsigned id)
{
	struct fpool_worker w = { .listeners = { fd }, .id = id };
	const struct fpool_worker_def *def = &fpool_http_worker;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	w.pid = getpid();
	w.base = event_base_new();
	if (w.base == NULL) {
		fprintf(stderr, "bare-http: cannot create the event loop\n");
		return 1;
	}
	if (def->on_start(&w, NULL) != 0)
		return 1;
	r = def->main(&w, NULL);
	def->on_shutdown(&w, NULL);
	event_base_free(w.base);
	return r;
}

int main(int argc, char **argv)
{
	return bare_main(argc, argv, "bare-http", child);
}
