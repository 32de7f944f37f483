/*
 * echo: a TCP (or unix stream) echo server on every listener the worker
 * inherits, event-driven with libevent bufferevents.
 *
 * SIGTERM: stop accepting (the listeners are closed in this worker only),
 * keep serving the open connections until their clients close them; a
 * byte stream has no message boundary at which to cut one.  The master's
 * --graceful-timeout bounds the wait.  SIGINT: close everything at once.
 *
 * It uses only the public API, as any worker written outside the tree.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "forkpool.h"

/* Stop reading from a client while this much echo waits to be sent, so
 * a client that writes but never reads cannot grow our memory. */
#define ECHO_HIGH_WATER (1024 * 1024)

struct echo_conn {
	struct bufferevent *bev;
	struct echo_conn *prev, *next;
	struct echo *echo;
	int closing; /* the client closed its side; flush, then close */
};

struct echo {
	struct fpool_worker *w;
	struct evconnlistener **listeners;
	size_t nlisteners;
	struct echo_conn *conns;
};

static void conn_free(struct echo_conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->echo->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	bufferevent_free(c->bev);
	free(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct echo_conn *c = arg;
	struct evbuffer *out = bufferevent_get_output(bev);

	if (evbuffer_add_buffer(out, bufferevent_get_input(bev)) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "echo: out of memory; closing a "
					   "connection");
		conn_free(c);
		return;
	}
	if (evbuffer_get_length(out) >= ECHO_HIGH_WATER) {
		bufferevent_disable(bev, EV_READ);
		bufferevent_setwatermark(bev, EV_WRITE, ECHO_HIGH_WATER / 2, 0);
	}
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct echo_conn *c = arg;

	/* Called once the output drained below the low-water mark. */
	if (c->closing &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
		conn_free(c);
		return;
	}
	if (!c->closing && !(bufferevent_get_enabled(bev) & EV_READ)) {
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		bufferevent_enable(bev, EV_READ);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct echo_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
		/* Half-closed by the client: send the rest of its echo
		 * first. */
		c->closing = 1;
		bufferevent_disable(bev, EV_READ);
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if (what & BEV_EVENT_ERROR)
		fpool_log(FPOOL_LOG_DEBUG, "echo: connection error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	conn_free(c);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int salen, void *arg)
{
	struct echo *e = arg;
	struct echo_conn *c = calloc(1, sizeof(*c));

	(void)l;
	(void)sa;
	(void)salen;
	if (c == NULL) {
		evutil_closesocket(fd);
		fpool_log(FPOOL_LOG_ERROR, "echo: out of memory; refused a "
					   "connection");
		return;
	}
	c->echo = e;
	c->bev = bufferevent_socket_new(fpool_worker_base(e->w), fd,
					BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		fpool_log(FPOOL_LOG_ERROR, "echo: cannot set up a connection");
		return;
	}
	c->next = e->conns;
	if (e->conns != NULL)
		e->conns->prev = c;
	e->conns = c;
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
			  c);
	bufferevent_enable(c->bev, EV_READ);
	fpool_worker_count_requests(e->w, 1);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	(void)l;
	(void)arg;
	/* EMFILE and friends: the connection stays queued and is retried
	 * at the next readiness. */
	fpool_log(FPOOL_LOG_WARNING, "echo: accept failed: %s",
		  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void close_listeners(struct echo *e)
{
	/* LEV_OPT_CLOSE_ON_FREE closes this worker's copy only: the master
	 * and the other workers keep the socket. */
	for (size_t i = 0; i < e->nlisteners; i++)
		evconnlistener_free(e->listeners[i]);
	free(e->listeners);
	e->listeners = NULL;
	e->nlisteners = 0;
}

static int echo_on_start(struct fpool_worker *w, void *arg)
{
	struct echo *e = calloc(1, sizeof(*e));
	size_t n;
	const int *fds = fpool_worker_listeners(w, &n);

	(void)arg;
	if (e == NULL)
		return -ENOMEM;
	e->w = w;
	fpool_worker_set_data(w, e);
	e->listeners = calloc(n ? n : 1, sizeof(*e->listeners));
	if (e->listeners == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		/* Backlog 0: the master already called listen(). */
		struct evconnlistener *l =
			evconnlistener_new(fpool_worker_base(w), accept_cb, e,
					   LEV_OPT_CLOSE_ON_FREE, 0, fds[i]);

		if (l == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "echo: cannot listen on fd %d", fds[i]);
			return -EIO;
		}
		evconnlistener_set_error_cb(l, accept_error_cb);
		e->listeners[e->nlisteners++] = l;
	}
	return 0;
}

static int echo_on_stop(struct fpool_worker *w, void *arg)
{
	(void)arg;
	close_listeners(fpool_worker_data(w));
	return 0;
}

static int echo_main(struct fpool_worker *w, void *arg)
{
	struct echo *e = fpool_worker_data(w);
	int r;

	(void)arg;
	r = fpool_worker_loop(w);
	/* After an interrupt (or a loop failure) connections may remain. */
	while (e->conns != NULL)
		conn_free(e->conns);
	close_listeners(e);
	return r == 0 ? 0 : 1;
}

static int echo_on_shutdown(struct fpool_worker *w, void *arg)
{
	(void)arg;
	free(fpool_worker_data(w));
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_echo_worker = {
	.name = "echo",
	.description = "TCP echo on every listener",
	.on_start = echo_on_start,
	.on_stop = echo_on_stop,
	.on_shutdown = echo_on_shutdown,
	.main = echo_main,
};
