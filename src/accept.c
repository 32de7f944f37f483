/*
 * Accepting connections: the one accept path of forkpool, used by the
 * control socket, by every built-in worker, and offered to worker authors
 * (fpool_acceptor_new() in forkpool.h).
 *
 * A listening socket stays readable while a connection waits in its
 * queue, so an accept() that fails for lack of a resource (out of file
 * descriptors, socket buffers or memory) would be retried at once, forever:
 * a loop that spins at 100 % CPU and writes the same error as fast as it
 * can.  Instead the acceptor stops watching the socket and tries again
 * after FPOOL_ACCEPT_PAUSE; the connection stays queued in the kernel
 * meanwhile.  The first failure of such a run is logged, and its end
 * (with how long accepting was paused), not every retry: that is what
 * nginx does with its accept events (ngx_event_accept.c, 500 ms), here
 * with a shorter pause since a worker frees descriptors in milliseconds.
 *
 * Errors that belong to one connection (it was reset while queued, and
 * the network errors accept(2) passes on for it on Linux) drop that
 * connection and go on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

/* Connections taken per readiness, so that a busy listener cannot starve
 * the connections already open. */
#define ACCEPT_BATCH 64

struct fpool_acceptor {
	struct event *ev;    /* EV_READ on the listening socket */
	struct event *timer; /* ends a pause */
	int fd;
	unsigned flags;
	bool enabled;	  /* the owner wants connections */
	bool paused;	  /* waiting after a resource error */
	double paused_at; /* when the current run of failures began; 0: none */
	unsigned pauses;  /* pauses in the current run */
	bool in_cb;	  /* the callback runs: freeing waits for its end */
	bool freed;	  /* fpool_acceptor_free() was called from it */
	fpool_accept_cb cb;
	void *arg;
	char name[128]; /* the socket's address, for messages */
};

/* Whether accept() failed for lack of a resource (retrying at once would
 * fail again), rather than because of the connection it was taking. */
static bool resource_error(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	       err == ENOMEM;
}

/* Errors accept(2) passes on from a connection that failed while it was
 * queued: that connection is lost, the next may be fine (accept(2),
 * "Error handling" on Linux). */
static bool connection_error(int err)
{
	return err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
	       err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET ||
	       err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH ||
	       err == EPERM; /* a firewall rule refused it */
}

static int watch(struct fpool_acceptor *a)
{
	if (event_add(a->ev, NULL) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "cannot watch listener %s; it takes no connection",
			  a->name);
		return -ENOMEM;
	}
	return 0;
}

/* Stop watching the socket for FPOOL_ACCEPT_PAUSE.  `quiet`: right after
 * accepting in the same turn, the failure may only mean that no fd was
 * left for a connection that is not there (Linux allocates the fd before
 * it looks at the queue): pause, but start a logged run of failures only
 * if the retry fails too. */
static void pause_accepting(struct fpool_acceptor *a, int err, bool quiet)
{
	struct timeval tv = fpool__tv(FPOOL_ACCEPT_PAUSE);

	if (a->paused_at == 0 && !quiet) {
		a->paused_at = fpool__now();
		a->pauses = 0;
		fpool__log_errno(FPOOL_LOG_WARNING, err,
				 "accept on %s failed; pausing accepts, "
				 "retrying every %.0f ms",
				 a->name, FPOOL_ACCEPT_PAUSE * 1e3);
	}
	a->pauses++;
	a->paused = true;
	event_del(a->ev);
	if (event_add(a->timer, &tv) != 0) {
		/* Without the timer, a listener left unwatched would never
		 * accept again; spinning is the lesser evil. */
		fpool_log(FPOOL_LOG_ERROR,
			  "cannot arm the accept pause on %s; retrying at "
			  "once",
			  a->name);
		a->paused = false;
		watch(a);
	}
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct fpool_acceptor *a = arg;

	(void)what;
	for (int i = 0; i < ACCEPT_BATCH && a->enabled && !a->paused; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			int err = errno;

			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			if (err == EINTR || connection_error(err))
				continue;
			if (resource_error(err)) {
				pause_accepting(a, err, i > 0);
				return;
			}
			/* EBADF, EINVAL...: a bug or a socket that stopped
			 * listening; retrying cannot help. */
			fpool__log_errno(FPOOL_LOG_ERROR, err,
					 "accept on %s failed; no longer "
					 "accepting there",
					 a->name);
			a->enabled = false;
			event_del(a->ev);
			return;
		}
		if (a->paused_at != 0) {
			fpool_log(FPOOL_LOG_INFO,
				  "accepting on %s again after %.3f s (%u "
				  "pauses)",
				  a->name, fpool__now() - a->paused_at,
				  a->pauses);
			a->paused_at = 0;
		}
		/* The callback may free the acceptor (a worker that stops
		 * there closes its listeners): that waits until it returns. */
		a->in_cb = true;
		a->cb(a, fd, (struct sockaddr *)&ss, len, a->arg);
		a->in_cb = false;
		if (a->freed) {
			fpool_acceptor_free(a);
			return;
		}
	}
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_acceptor *a = arg;

	(void)fd;
	(void)what;
	a->paused = false;
	if (a->enabled && watch(a) == 0)
		/* Try now: the socket may have been readable all along. */
		event_active(a->ev, EV_READ, 0);
}

int fpool_acceptor_new(struct fpool_acceptor **out, struct event_base *base,
		       int fd, unsigned flags, fpool_accept_cb cb, void *arg)
{
	struct fpool_acceptor *a;

	*out = NULL;
	if (base == NULL || fd < 0 || cb == NULL ||
	    (flags & ~(unsigned)FPOOL_ACCEPT_CLOSE) != 0)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return -ENOMEM;
	a->fd = fd;
	a->flags = flags;
	a->cb = cb;
	a->arg = arg;
	a->enabled = true;
	fpool__sockname(fd, a->name, sizeof(a->name));
	a->ev = event_new(base, fd, EV_READ | EV_PERSIST, accept_cb, a);
	a->timer = evtimer_new(base, resume_cb, a);
	if (a->ev == NULL || a->timer == NULL || watch(a) != 0) {
		a->flags = 0; /* the caller keeps the fd on failure */
		fpool_acceptor_free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

int fpool_acceptor_fd(const struct fpool_acceptor *a)
{
	return a->fd;
}

int fpool_acceptor_enable(struct fpool_acceptor *a, int on)
{
	if (!on) {
		a->enabled = false;
		event_del(a->ev);
		return 0;
	}
	if (a->enabled)
		return 0;
	a->enabled = true;
	return a->paused ? 0 : watch(a);
}

void fpool_acceptor_free(struct fpool_acceptor *a)
{
	if (a == NULL)
		return;
	if (a->in_cb) {
		/* Called from the accept callback: stop now, free after. */
		a->freed = true;
		a->enabled = false;
		event_del(a->ev);
		event_del(a->timer);
		return;
	}
	if (a->ev != NULL)
		event_free(a->ev);
	if (a->timer != NULL)
		event_free(a->timer);
	if ((a->flags & FPOOL_ACCEPT_CLOSE) && close(a->fd) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "closing listener %s", a->name);
	free(a);
}
