/*
 * The jsonrpc worker's connections: accepting, reading lines and
 * answering them as far as the bounds allow, the idle timeout, the stop
 * grace and the linger, and closing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "../common.h"
#include "rpc-int.h"

/* ---- Connections ----------------------------------------------------- */

void rpc_conn_free(struct rpc_conn *c)
{
	struct rpc *r = c->rpc;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct rpc_reply *rp;
	size_t held = c->queued;

	while ((rp = c->head) != NULL) {
		c->head = rp->next;
		rpc_reply_free(rp);
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	/* libevent frees the buffers later, from the loop: they stop
	 * counting now. */
	if (c->in_cb != NULL) {
		evbuffer_remove_cb_entry(in, c->in_cb);
		held += evbuffer_get_length(in);
	}
	if (c->out_cb != NULL) {
		evbuffer_remove_cb_entry(out, c->out_cb);
		held += evbuffer_get_length(out);
	}
	rpc_held_sub(r, held);
	if (c->timer != NULL)
		event_free(c->timer);
	bufferevent_free(c->bev);
	if (r->freed >= RPC_TRIM_AFTER && r->trim != NULL &&
	    !evtimer_pending(r->trim, NULL)) {
		struct timeval tv = { 0, RPC_TRIM_DELAY_MS * 1000 };

		if (evtimer_add(r->trim, &tv) != 0)
			fpool_log(FPOOL_LOG_DEBUG,
				  "jsonrpc: cannot arm the trim timer");
	}
	free(c);
}

void rpc_trim_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc *r = arg;

	(void)fd;
	(void)what;
	r->freed = 0;
#ifdef __GLIBC__
	/* Blocks under the mmap threshold (read buffers, small replies)
	 * come from the heap, where glibc gives back only a free top; this
	 * gives back the free pages in between too (the buffers of the
	 * connection closed are freed by now: libevent finalizes them in
	 * the loop turn of the close). */
	malloc_trim(0);
#endif
}

/* Start the idle timeout, or the stop grace, unless it runs already. */
static int arm_idle(struct rpc_conn *c)
{
	struct timeval grace = { WK_STOP_GRACE, 0 };
	const struct timeval *tv = &c->rpc->idle_timeout;

	if (evtimer_pending(c->timer, NULL))
		return 0;
	if (c->rpc->stopping && evutil_timercmp(&grace, tv, <))
		tv = &grace;
	return evtimer_add(c->timer, tv);
}

/*
 * After anything changed: close a connection that is done, run the idle
 * timeout (the stop grace once stopping) or the linger.  Returns false
 * if the connection was freed.
 */
bool rpc_conn_update(struct rpc_conn *c)
{
	struct timeval linger = { WK_LINGER, 0 };
	int fd;

	switch (c->state) {
	case CONN_OPEN:
		/* Waiting for a sleep, or for the client to read, is not
		 * idle; the output has a timeout of its own. */
		if (rpc_waiting(c)) {
			event_del(c->timer);
		} else if (arm_idle(c) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot arm the idle timer; "
				  "closing an idle connection now");
			rpc_conn_free(c);
			return false;
		}
		break;
	case CONN_CLOSING:
		if (!rpc_waiting(c) &&
		    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
			rpc_conn_free(c);
			return false;
		}
		break;
	case CONN_LINGER:
		if (rpc_waiting(c) || c->shut)
			break;
		/* The refusal is sent: shut our side down and read what
		 * the client still sends, so that closing does not reset
		 * the connection before it has read the reply. */
		fd = bufferevent_getfd(c->bev);
		if (shutdown(fd, SHUT_WR) < 0) {
			fpool_log(FPOOL_LOG_DEBUG,
				  "jsonrpc: shutdown of fd %d: %s", fd,
				  strerror(errno));
			rpc_conn_free(c);
			return false;
		}
		c->shut = true;
		if (evtimer_add(c->timer, &linger) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot arm the linger timer; "
				  "closing now");
			rpc_conn_free(c);
			return false;
		}
		break;
	}
	return true;
}

/* Refuse the line being received: too large. */
static void conn_refuse(struct rpc_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (rpc_gen_error(c->rpc->g, RPC_INVALID_REQUEST, "request too large",
			  NULL, NULL))
		rpc_conn_reply(c, -1);
	else
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot generate a reply");
	c->rpc->requests++;
	fpool_worker_count_requests(c->rpc->w, 1);
	evbuffer_drain(in, evbuffer_get_length(in));
	if (c->state == CONN_CLOSING)
		return; /* the client sends nothing more: flush and close */
	c->state = CONN_LINGER;
	event_del(c->timer);
	bufferevent_enable(c->bev, EV_READ);
}

/* Answer the complete lines received, as far as the bounds allow.
 * Returns false if the connection was freed. */
static bool conn_process(struct rpc_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	while (c->state != CONN_LINGER && !rpc_throttled(c)) {
		size_t eol_len = 0, inlen = evbuffer_get_length(in), len;
		struct evbuffer_ptr eol = evbuffer_search_eol(
			in, NULL, &eol_len, EVBUFFER_EOL_LF);
		char *line;

		if (eol.pos < 0) {
			if (inlen > RPC_MAX_LINE) {
				conn_refuse(c);
				break;
			}
			/* At EOF the rest is the last line. */
			if (c->state != CONN_CLOSING || inlen == 0)
				break;
			eol.pos = (ev_ssize_t)inlen;
		}
		if ((size_t)eol.pos > RPC_MAX_LINE) {
			conn_refuse(c);
			break;
		}
		line = malloc((size_t)eol.pos + 1);
		if (line == NULL) {
			fpool_log(FPOOL_LOG_ERROR, "jsonrpc: out of memory; "
						   "closing a connection");
			rpc_conn_free(c);
			return false;
		}
		len = (size_t)eol.pos;
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		rpc_handle_line(c, line, len);
		free(line);
	}
	if (c->state == CONN_LINGER)
		evbuffer_drain(in, evbuffer_get_length(in));
	else if (c->state == CONN_OPEN && rpc_throttled(c))
		bufferevent_disable(c->bev, EV_READ);
	return rpc_conn_update(c);
}

/* Output went out, a sleep ended or the worker holds less: read again if
 * we had stopped, and answer what waits. */
void rpc_conn_kick(struct rpc_conn *c)
{
	if (c->state == CONN_OPEN && !rpc_throttled(c) &&
	    !(bufferevent_get_enabled(c->bev) & EV_READ) &&
	    bufferevent_enable(c->bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot read from a "
					   "connection again; closing it");
		rpc_conn_free(c);
		return;
	}
	conn_process(c);
}

void rpc_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc *r = arg;
	struct rpc_conn *c, *next;

	(void)fd;
	(void)what;
	/* rpc_conn_kick() may free c, never another connection. */
	for (c = r->conns; c != NULL; c = next) {
		next = c->next;
		rpc_conn_kick(c);
	}
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct rpc_conn *c = arg;

	(void)bev;
	if (c->state == CONN_OPEN)
		event_del(c->timer); /* not idle: the timeout starts anew */
	conn_process(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	/* Called once the output has drained. */
	rpc_conn_kick(arg);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct rpc_conn *c = arg;

	(void)bev;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    !(c->state == CONN_LINGER && c->shut)) {
		/* Half-closed: answer what came (a refusal included), then
		 * close. */
		c->state = CONN_CLOSING;
		event_del(c->timer);
		bufferevent_disable(c->bev, EV_READ);
		conn_process(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT)
		fpool_log(FPOOL_LOG_DEBUG,
			  "jsonrpc: closing a connection whose client read "
			  "nothing for %.3f s",
			  wk_seconds(&c->rpc->idle_timeout));
	else if (what & BEV_EVENT_ERROR)
		fpool_log(FPOOL_LOG_DEBUG, "jsonrpc: connection error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	rpc_conn_free(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_conn *c = arg;

	(void)fd;
	(void)what;
	/* The idle timeout, the stop grace or the linger is over. */
	if (c->state == CONN_OPEN && !c->rpc->stopping)
		fpool_log(FPOOL_LOG_DEBUG,
			  "jsonrpc: closing a connection idle for %.3f s",
			  wk_seconds(&c->rpc->idle_timeout));
	rpc_conn_free(c);
}

void rpc_accept_cb(struct fpool_acceptor *a, int fd, const struct sockaddr *sa,
		   socklen_t salen, void *arg)
{
	struct rpc *r = arg;
	struct event_base *base = fpool_worker_base(r->w);
	struct rpc_conn *c;

	(void)a;
	(void)salen;
	/* Small replies, often pipelined: no Nagle delay. */
	if (wk_nodelay(fd, sa) < 0)
		fpool_log(FPOOL_LOG_DEBUG, "jsonrpc: TCP_NODELAY: %s",
			  strerror(errno));
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		evutil_closesocket(fd);
		fpool_log(FPOOL_LOG_ERROR,
			  "jsonrpc: out of memory; refused a connection");
		return;
	}
	c->rpc = r;
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		fpool_log(FPOOL_LOG_ERROR,
			  "jsonrpc: cannot set up a connection");
		return;
	}
	/* From here on rpc_conn_free() undoes what was done. */
	c->next = r->conns;
	if (r->conns != NULL)
		r->conns->prev = c;
	r->conns = c;
	c->timer = evtimer_new(base, conn_timer_cb, c);
	c->in_cb = evbuffer_add_cb(bufferevent_get_input(c->bev),
				   rpc_buf_count_cb, c);
	c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev),
				    rpc_buf_count_cb, c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
			  c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, RPC_READ_MAX);
	if (c->timer == NULL || c->in_cb == NULL || c->out_cb == NULL ||
	    bufferevent_set_timeouts(c->bev, NULL, &r->idle_timeout) != 0 ||
	    bufferevent_enable(c->bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "jsonrpc: cannot set up a connection");
		rpc_conn_free(c);
		return;
	}
	rpc_conn_update(c); /* the idle timeout starts */
}
