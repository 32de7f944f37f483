/*
 * A line the jsonrpc worker received, up to a request for methods.c: the
 * check of what yajl_tree cannot take (fpool_json_check(): deep nesting,
 * "\u0000", lone surrogates, ill-formed UTF-8), the parse, and the checks
 * that make it a request or a JSON-RPC error.
 */
#include <string.h>

#include "rpc-int.h"

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
	} else if (!YAJL_IS_OBJECT(req)) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   "a request is a JSON object", NULL);
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
