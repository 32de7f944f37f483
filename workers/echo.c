/*
 * echo: a TCP (or unix stream) echo server on every listener the worker
 * inherits, event-driven with libevent bufferevents.
 *
 * Worker arguments (after `--` on forkpool's command line):
 *   --idle-timeout SEC    close a connection idle this long (default
 *                         ECHO_IDLE_TIMEOUT).  Idle: nothing received and
 *                         nothing waiting to be sent.  A client that reads
 *                         none of the echo waiting for it for as long is
 *                         closed too: it would hold its buffers for ever.
 *
 * SIGTERM: stop accepting (the listeners are closed in this worker only),
 * keep serving the open connections until their clients close them or
 * they time out; a byte stream has no message boundary at which to cut
 * one.  The master's --graceful-timeout bounds the wait.  SIGINT: close
 * everything at once.
 *
 * It uses only the public API, as any worker written outside the tree.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common.h"

/* Stop reading from a client while this much echo waits to be sent, so
 * a client that writes but never reads cannot grow our memory. */
#define ECHO_HIGH_WATER (1024 * 1024)
/* Default --idle-timeout, s.  An echo connection is often a person at a
 * terminal (nc, telnet) who may pause for minutes, and one costs little
 * while it waits (no buffer is held when nothing is in flight), so the
 * default is generous; it is there so that a client gone without a FIN
 * does not hold a descriptor for ever. */
#define ECHO_IDLE_TIMEOUT 300

struct echo_conn {
	struct bufferevent *bev;
	struct echo_conn *prev, *next;
	struct echo *echo;
	int closing; /* the client closed its side; flush, then close */
};

struct echo {
	struct fpool_worker *w;
	struct fpool_acceptor **acceptors;
	size_t nacceptors;
	struct echo_conn *conns;
	struct timeval idle_timeout;
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
	if (c->closing) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	/* Read again if we had stopped.  Once all is sent the connection
	 * is idle from now: enabling the read event again, even if it is
	 * on, restarts its timeout. */
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	if (bufferevent_enable(bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "echo: cannot read from a "
					   "connection again; closing it");
		conn_free(c);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct echo_conn *c = arg;
	size_t pending = evbuffer_get_length(bufferevent_get_output(bev));

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    pending > 0) {
		/* Half-closed by the client: send the rest of its echo
		 * first. */
		c->closing = 1;
		bufferevent_disable(bev, EV_READ);
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
	    pending > 0) {
		/* Nothing received for the timeout, but echo waits to be
		 * sent: not idle.  The write timeout watches the client's
		 * reading; libevent stopped reading, so start again (and
		 * with it the read timeout). */
		if (bufferevent_enable(bev, EV_READ) == 0)
			return;
		fpool_log(FPOOL_LOG_ERROR, "echo: cannot read from a "
					   "connection again; closing it");
	} else if (what & BEV_EVENT_TIMEOUT) {
		fpool_log(FPOOL_LOG_DEBUG,
			  "echo: closing a connection %s for %.3f s",
			  (what & BEV_EVENT_READING)
				  ? "idle"
				  : "whose client read nothing",
			  wk_seconds(&c->echo->idle_timeout));
	} else if (what & BEV_EVENT_ERROR) {
		fpool_log(FPOOL_LOG_DEBUG, "echo: connection error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	}
	conn_free(c);
}

static void accept_cb(struct fpool_acceptor *a, int fd,
		      const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct echo *e = arg;
	struct echo_conn *c = calloc(1, sizeof(*c));

	(void)a;
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
	/* Reading times out when nothing came for the idle timeout, writing
	 * when the client took none of the echo for as long. */
	if (bufferevent_set_timeouts(c->bev, &e->idle_timeout,
				     &e->idle_timeout) != 0 ||
	    bufferevent_enable(c->bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "echo: cannot set up a connection");
		conn_free(c);
		return;
	}
	fpool_worker_count_requests(e->w, 1);
}

static void close_listeners(struct echo *e)
{
	wk_accept_stop(e->acceptors, &e->nacceptors);
	free(e->acceptors);
	e->acceptors = NULL;
}

/* The worker arguments: --idle-timeout SEC (or --idle-timeout=SEC). */
static int echo_setup(struct fpool_worker *w, int argc, char **argv)
{
	struct echo *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "echo: out of memory");
		return -ENOMEM;
	}
	e->idle_timeout.tv_sec = ECHO_IDLE_TIMEOUT;
	if (wk_idle_timeout_args("echo", argc, argv, &e->idle_timeout) != 0) {
		free(e);
		return -EINVAL;
	}
	fpool_worker_set_data(w, e);
	return 0;
}

static int echo_on_start(struct fpool_worker *w, void *arg)
{
	struct echo *e = fpool_worker_data(w);
	size_t n;

	(void)arg;
	fpool_worker_listeners(w, &n); /* acceptors[] has room for each */
	if (e == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "echo: started without setup");
		return -EINVAL;
	}
	e->w = w;
	e->acceptors = calloc(n ? n : 1, sizeof(*e->acceptors));
	if (e->acceptors == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "echo: out of memory");
		return -ENOMEM;
	}
	return wk_accept_all(w, "echo", e->acceptors, &e->nacceptors, accept_cb,
			     e);
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
	struct echo *e = fpool_worker_data(w);

	(void)arg;
	if (e != NULL) {
		/* main may not have run */
		while (e->conns != NULL)
			conn_free(e->conns);
		close_listeners(e);
		free(e);
	}
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_echo_worker = {
	.name = "echo",
	.description = "TCP echo on every listener",
	.setup = echo_setup,
	.on_start = echo_on_start,
	.on_stop = echo_on_stop,
	.on_shutdown = echo_on_shutdown,
	.main = echo_main,
};
