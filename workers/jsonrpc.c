/*
 * jsonrpc: JSON-RPC 2.0 over TCP (or a unix stream socket) on every
 * listener the worker inherits: one JSON object per line each way, parsed
 * with yajl_tree_parse() and written with yajl_gen.
 *
 * Methods:
 *   ping                  "pong"
 *   echo                  the params, whatever JSON they are (null if none)
 *   worker                {"id": ID, "pid": PID, "requests": N}
 *   sleep                 {"ms": N} or [N], 0 <= N <= 60000: true after
 *                         N ms, without blocking the loop
 * A reply echoes the request's id (a string, or a number with its exact
 * text).  Errors are JSON-RPC error objects: -32700 parse error, -32600
 * invalid request (deep nesting, "\u0000", the escape of a lone surrogate
 * and ill-formed UTF-8 too: fpool_json_check()),
 * -32601 method not found, -32602 invalid params; the connection stays
 * usable.  A notification (no id) gets no reply.  A batch (a non-empty
 * array of requests, JSON-RPC 2.0 section 6) gets one line: the array of
 * its replies (workers/jsonrpc/request.c), none at all if it holds
 * notifications only; at most RPC_MAX_BATCH requests.  A line over
 * RPC_MAX_LINE gets -32600 "request too large", then the connection is
 * closed (after a lingering read, so the client sees the reply).
 * Replies keep the order of their requests on a connection: each waits
 * in a per-connection queue until those before it are sent, so a ping
 * after a slow sleep is answered after the sleep.
 *
 * Memory is bounded in bytes, whatever the clients do.  What a connection
 * holds (its queued replies, its output not yet written, its input not
 * yet answered) stays under RPC_CONN_MAX_BYTES: a client that sends
 * without reading is no longer read once its replies pile up, and is read
 * again when they drain.  Over all connections, once RPC_WORKER_MAX_BYTES
 * are held, no connection that has replies waiting is read until the
 * total is back under RPC_WORKER_RESUME; a connection with nothing
 * waiting is still served, one request at a time.
 *
 * Worker arguments (after `--` on forkpool's command line):
 *   --idle-timeout SEC    close a connection idle this long (default
 *                         RPC_IDLE_TIMEOUT).  Idle: nothing received and
 *                         nothing to send or compute (a connection waiting
 *                         for a sleep is not idle).  A client that reads
 *                         none of the output waiting for it for as long
 *                         is closed too, so a peer that stopped reading
 *                         cannot hold its buffers forever.
 *
 * SIGTERM: stop accepting, answer every request received (sleeps too),
 * and close each connection once it has been idle for WK_STOP_GRACE
 * (common.h; or the idle timeout, if shorter); a client that half-closed
 * is closed as soon as its answers are sent.  SIGINT: close everything at
 * once.
 *
 * It uses only the public API, as any worker written outside the tree.
 * This file is the worker: its arguments, its start and its stop.  The
 * rest is in workers/jsonrpc/ (see rpc-int.h there).
 */
#include <errno.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common.h"
#include "jsonrpc/rpc-int.h"

/* ---- The worker ------------------------------------------------------- */

/* Free everything; connections still open are closed at once. */
static void rpc_release(struct rpc *r)
{
	while (r->conns != NULL)
		rpc_conn_free(r->conns);
	wk_accept_stop(r->acceptors, &r->nacceptors);
	free(r->acceptors);
	r->acceptors = NULL;
	if (r->wake != NULL) {
		event_free(r->wake);
		r->wake = NULL;
	}
	if (r->trim != NULL) {
		event_free(r->trim);
		r->trim = NULL;
	}
	if (r->g != NULL) {
		yajl_gen_free(r->g);
		r->g = NULL;
	}
}

/* The worker arguments: --idle-timeout SEC (or --idle-timeout=SEC). */
static int rpc_setup(struct fpool_worker *w, int argc, char **argv)
{
	struct rpc *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: out of memory");
		return -ENOMEM;
	}
	r->idle_timeout.tv_sec = RPC_IDLE_TIMEOUT;
	if (wk_idle_timeout_args("jsonrpc", argc, argv, &r->idle_timeout) !=
	    0) {
		free(r);
		return -EINVAL;
	}
	fpool_worker_set_data(w, r);
	return 0;
}

static int rpc_on_start(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);
	struct event_base *base = fpool_worker_base(w);
	size_t n;

	(void)arg;
	fpool_worker_listeners(w, &n); /* acceptors[] has room for each */
	if (r == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: started without setup");
		return -EINVAL;
	}
	r->w = w;
#ifdef __GLIBC__
	/* glibc raises its mmap threshold (up to 32 MiB) each time a block
	 * it had mapped is freed, after which the 1 MiB lines and replies
	 * come from the heap, which keeps what is freed: a flood of big
	 * requests would leave the worker hundreds of MiB larger.  A fixed
	 * threshold keeps big blocks mapped, so freeing one unmaps it. */
	if (mallopt(M_MMAP_THRESHOLD, RPC_MMAP_THRESHOLD) != 1)
		/* Another malloc (a sanitizer's) may refuse it. */
		fpool_log(FPOOL_LOG_DEBUG,
			  "jsonrpc: mallopt(M_MMAP_THRESHOLD) refused; memory "
			  "freed after big requests may stay in the heap");
#endif
	r->acceptors = calloc(n ? n : 1, sizeof(*r->acceptors));
	r->wake = event_new(base, -1, 0, rpc_wake_cb, r);
	r->trim = evtimer_new(base, rpc_trim_cb, r);
	r->g = yajl_gen_alloc(NULL);
	if (r->acceptors == NULL || r->wake == NULL || r->trim == NULL ||
	    r->g == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot set up the server");
		return -ENOMEM;
	}
	return wk_accept_all(w, "jsonrpc", r->acceptors, &r->nacceptors,
			     rpc_accept_cb, r);
}

static int rpc_on_stop(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);
	struct rpc_conn *c, *next;

	(void)arg;
	r->stopping = true;
	wk_accept_stop(r->acceptors, &r->nacceptors);
	/* Idle connections get their grace now, instead of the rest of
	 * their idle timeout; busy ones once their replies are out
	 * (rpc_conn_update). */
	for (c = r->conns; c != NULL; c = next) {
		next = c->next;
		if (c->state == CONN_OPEN)
			event_del(c->timer);
		rpc_conn_update(c);
	}
	return 0;
}

static int rpc_main(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);
	int err;

	(void)arg;
	err = fpool_worker_loop(w);
	if (err != 0)
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: the loop failed: %s",
			  fpool_strerror(err));
	/* After an interrupt (or a loop failure) connections may remain. */
	rpc_release(r);
	return err == 0 ? 0 : 1;
}

static int rpc_on_shutdown(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);

	(void)arg;
	if (r != NULL) {
		rpc_release(r); /* main may not have run */
		free(r);
	}
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_jsonrpc_worker = {
	.name = "jsonrpc",
	.description = "JSON-RPC 2.0, one object per line: ping, echo, "
		       "worker, sleep",
	.setup = rpc_setup,
	.on_start = rpc_on_start,
	.on_stop = rpc_on_stop,
	.on_shutdown = rpc_on_shutdown,
	.main = rpc_main,
};
