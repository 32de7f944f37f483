/*
 * The jsonrpc worker's flow control: the bytes connections hold, bounded
 * per connection and for the whole worker (see workers/jsonrpc.c), and
 * the queue in which a reply waits for those before it (and a sleep for
 * its timer).
 */
#include <stdlib.h>
#include <string.h>

#include "rpc-int.h"

/* ---- Memory accounting ------------------------------------------------- */

/* Every connection is looked at again from the loop: reading stops for
 * those with replies waiting, or resumes. */
static void wake_all(struct rpc *r)
{
	event_active(r->wake, EV_TIMEOUT, 0);
}

static void held_add(struct rpc *r, size_t n)
{
	r->held += n;
	if (!r->over && r->held >= RPC_WORKER_MAX_BYTES) {
		r->over = true;
		fpool_log(FPOOL_LOG_WARNING,
			  "jsonrpc: connections hold %zu MiB; not reading "
			  "those with replies waiting until under %d MiB",
			  r->held >> 20, RPC_WORKER_RESUME >> 20);
		wake_all(r);
	}
}

void rpc_held_sub(struct rpc *r, size_t n)
{
	r->held = n < r->held ? r->held - n : 0;
	r->freed += n;
	if (r->over && r->held < RPC_WORKER_RESUME) {
		r->over = false;
		fpool_log(FPOOL_LOG_INFO,
			  "jsonrpc: connections hold %zu MiB; reading every "
			  "connection again",
			  r->held >> 20);
		wake_all(r);
	}
}

/* What a connection's input or output buffer holds changed (libevent
 * calls this at once, from inside the change). */
void rpc_buf_count_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		      void *arg)
{
	struct rpc_conn *c = arg;

	(void)buf;
	if (info->n_added > info->n_deleted)
		held_add(c->rpc, info->n_added - info->n_deleted);
	else if (info->n_deleted > info->n_added)
		rpc_held_sub(c->rpc, info->n_deleted - info->n_added);
}

static size_t reply_cost(const struct rpc_reply *rp)
{
	return sizeof(*rp) + rp->len;
}

static size_t out_len(struct rpc_conn *c)
{
	return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* Replies wait for the client: queued, or in the output buffer. */
bool rpc_waiting(struct rpc_conn *c)
{
	return c->head != NULL || out_len(c) > 0;
}

/* No further line is answered for now: too many replies wait, or too
 * many bytes, on this connection or (for one with replies waiting) in
 * the whole worker. */
bool rpc_throttled(struct rpc_conn *c)
{
	return c->npending >= RPC_MAX_PENDING ||
	       c->queued + out_len(c) >= RPC_CONN_REPLIES_MAX ||
	       (c->rpc->over && rpc_waiting(c));
}

/* ---- Queueing replies ------------------------------------------------ */

void rpc_reply_free(struct rpc_reply *rp)
{
	if (rp->timer != NULL)
		event_free(rp->timer);
	free(rp);
}

/* The output buffer is done with a reply moved there (written, or the
 * connection freed). */
static void reply_written_cb(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	free(arg);
}

/* Move the replies at the head of the queue that are due to the output. */
static void conn_flush(struct rpc_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct rpc_reply *rp;

	while ((rp = c->head) != NULL && rp->timer == NULL) {
		c->head = rp->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->npending--;
		c->queued -= reply_cost(rp);
		rpc_held_sub(c->rpc, reply_cost(rp));
		if (evbuffer_add_reference(out, rp->data, rp->len,
					   reply_written_cb, rp) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: out of memory; a reply is lost");
			free(rp);
		}
	}
}

static void sleep_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_reply *rp = arg;
	struct rpc_conn *c = rp->c;

	(void)fd;
	(void)what;
	event_free(rp->timer);
	rp->timer = NULL;
	conn_flush(c);
	rpc_conn_kick(c);
}

/* Queue the reply in g's buffer, due after `ms` (-1: at once). */
void rpc_conn_reply(struct rpc_conn *c, long ms)
{
	const unsigned char *buf;
	size_t len;

	yajl_gen_get_buf(c->rpc->g, &buf, &len);
	rpc_conn_reply_data(c, (const char *)buf, len, ms);
}

/* Queue the reply line `buf` (`len` bytes, no newline), due after `ms`
 * (-1: at once). */
void rpc_conn_reply_data(struct rpc_conn *c, const char *buf, size_t len,
			 long ms)
{
	struct rpc_reply *rp;

	if (ms < 0 && c->head == NULL) {
		/* Nothing waits before it: straight to the socket. */
		if (evbuffer_add(bufferevent_get_output(c->bev), buf, len) !=
			    0 ||
		    evbuffer_add(bufferevent_get_output(c->bev), "\n", 1) != 0)
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: out of memory; a reply is lost");
		return;
	}
	rp = malloc(sizeof(*rp) + len + 1);
	if (rp == NULL) {
		fpool_log(FPOOL_LOG_ERROR,
			  "jsonrpc: out of memory; a reply is lost");
		return;
	}
	rp->next = NULL;
	rp->c = c;
	rp->timer = NULL;
	rp->len = len + 1;
	memcpy(rp->data, buf, len);
	rp->data[len] = '\n';
	if (ms >= 0) {
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

		rp->timer = evtimer_new(bufferevent_get_base(c->bev),
					sleep_done_cb, rp);
		if (rp->timer == NULL || evtimer_add(rp->timer, &tv) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot arm a sleep timer; "
				  "answering at once");
			if (rp->timer != NULL)
				event_free(rp->timer);
			rp->timer = NULL;
		}
	}
	if (c->tail != NULL)
		c->tail->next = rp;
	else
		c->head = rp;
	c->tail = rp;
	c->npending++;
	c->queued += reply_cost(rp);
	held_add(c->rpc, reply_cost(rp));
	conn_flush(c);
}
