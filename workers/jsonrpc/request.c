/*
 * A line the jsonrpc worker received, up to a request for methods.c: the
 * check of what yajl_tree cannot take (fpool_json_check(): deep nesting,
 * "\u0000", lone surrogates, ill-formed UTF-8), the parse, and the checks
 * that make it a request, a batch of requests or a JSON-RPC error.
 *
 * A batch (JSON-RPC 2.0 section 6: a non-empty array) is answered with
 * one line holding the array of its replies, in the order of its
 * requests; notifications get none, and a batch of notifications only
 * gets no line at all.  Every request of the batch is answered at once;
 * the line is due when its longest sleep ends (so sleeps in a batch run
 * side by side), and takes its place in the connection's queue like any
 * reply.  An empty array is one -32600 object, as is a batch of more than
 * RPC_MAX_BATCH requests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc-int.h"

/* The replies of a batch, gathered into one JSON array. */
struct batch {
	char *buf;
	size_t len, cap;
	size_t n;    /* replies in it */
	bool failed; /* out of memory, or over RPC_MAX_REPLY */
};

static void batch_add(struct batch *b, const unsigned char *data, size_t len)
{
	size_t need = b->len + len + 2; /* '[' or ',', and the final ']' */
	size_t cap;
	char *p;

	if (b->failed)
		return;
	if (need > RPC_MAX_REPLY) {
		b->failed = true;
		return;
	}
	if (need > b->cap) {
		cap = b->cap ? b->cap : 4096;
		while (cap < need)
			cap *= 2;
		p = realloc(b->buf, cap);
		if (p == NULL) {
			b->failed = true;
			return;
		}
		b->buf = p;
		b->cap = cap;
	}
	b->buf[b->len++] = b->n == 0 ? '[' : ',';
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	b->n++;
}

/* Answer a batch's request `m` into `b`; *ms_max: the longest sleep. */
static void batch_member(struct rpc *r, struct batch *b, yajl_val m,
			 long *ms_max)
{
	const unsigned char *buf;
	size_t len;
	long ms = -1;
	bool ok = true, reply = true;

	if (!YAJL_IS_OBJECT(m))
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   "a request is a JSON object", NULL);
	else
		reply = rpc_handle_request(r, m, &ms, &ok);
	if (!reply)
		return;
	if (!ok) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot generate a reply");
		ms = -1;
		if (!rpc_gen_error(r->g, RPC_INTERNAL_ERROR, "Internal error",
				   NULL, NULL)) {
			b->failed = true;
			return;
		}
	}
	yajl_gen_get_buf(r->g, &buf, &len);
	batch_add(b, buf, len);
	if (ms > *ms_max)
		*ms_max = ms;
}

/* Answer the batch `req` (an array of 1 to RPC_MAX_BATCH values). */
static void handle_batch(struct rpc_conn *c, yajl_val req)
{
	struct rpc *r = c->rpc;
	struct batch b = { 0 };
	size_t n = req->u.array.len;
	long ms = -1;

	/* The line was counted as one request; its batch holds n. */
	r->requests += (long long)n - 1;
	fpool_worker_count_requests(r->w, n - 1);
	for (size_t i = 0; i < n; i++)
		batch_member(r, &b, req->u.array.values[i], &ms);
	if (b.failed) {
		fpool_log(FPOOL_LOG_WARNING,
			  "jsonrpc: the replies to a batch of %zu requests "
			  "take more than %d bytes (or memory ran out); "
			  "answering with one error",
			  n, RPC_MAX_REPLY);
		if (rpc_gen_error(r->g, RPC_INTERNAL_ERROR, "Internal error",
				  "the replies to this batch are too large",
				  NULL))
			rpc_conn_reply(c, -1);
	} else if (b.n > 0) {
		b.buf[b.len++] = ']';
		rpc_conn_reply_data(c, b.buf, b.len, ms);
	}
	free(b.buf);
}

/* Answer one line (NUL-terminated, newline removed). */
void rpc_handle_line(struct rpc_conn *c, char *line, size_t len)
{
	struct rpc *r = c->rpc;
	char err[1024];
	const char *why;
	yajl_val req = NULL;
	long ms = -1;
	bool ok = true, reply = true;

	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	if (strspn(line, " \t") == len)
		return; /* a blank line is no request */
	r->requests++;
	fpool_worker_count_requests(r->w, 1);
	if (memchr(line, '\0', len) != NULL) {
		ok = rpc_gen_error(r->g, RPC_PARSE_ERROR, "Parse error",
				   "a NUL byte in the line", NULL);
	} else if ((why = fpool_json_check(line, len, RPC_MAX_DEPTH, 0)) !=
		   NULL) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   why, NULL);
	} else if ((req = yajl_tree_parse(line, err, sizeof(err))) == NULL) {
		/* The first line of yajl's message; the rest quotes the
		 * input. */
		err[strcspn(err, "\n")] = '\0';
		ok = rpc_gen_error(r->g, RPC_PARSE_ERROR, "Parse error", err,
				   NULL);
	} else if (YAJL_IS_ARRAY(req) && req->u.array.len > RPC_MAX_BATCH) {
		snprintf(err, sizeof(err),
			 "a batch holds at most %d requests (this one %zu)",
			 RPC_MAX_BATCH, req->u.array.len);
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   err, NULL);
	} else if (YAJL_IS_ARRAY(req) && req->u.array.len > 0) {
		handle_batch(c, req);
		reply = false;
	} else if (!YAJL_IS_OBJECT(req)) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   YAJL_IS_ARRAY(req)
					   ? "an empty batch"
					   : "a request is a JSON object or a "
					     "batch (an array of them)",
				   NULL);
	} else {
		reply = rpc_handle_request(r, req, &ms, &ok);
	}
	if (reply && !ok) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot generate a reply");
		ms = -1;
		ok = rpc_gen_error(r->g, RPC_INTERNAL_ERROR, "Internal error",
				   NULL, NULL);
	}
	if (reply && ok)
		rpc_conn_reply(c, ms);
	yajl_tree_free(req);
	rpc_gen_shrink(r);
}
