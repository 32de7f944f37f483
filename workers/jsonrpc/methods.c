/*
 * The jsonrpc worker's methods (ping, echo, worker, sleep), and its
 * replies written with yajl_gen: results and JSON-RPC error objects.
 */
#include <string.h>

#include "rpc-int.h"

/* ---- Writing replies ------------------------------------------------- */

static bool gen_str(yajl_gen g, const char *s)
{
	return yajl_gen_string(g, (const unsigned char *)s, strlen(s)) ==
	       yajl_gen_status_ok;
}

/* Write `v` back as it came; numbers keep their exact text. */
static bool gen_value(yajl_gen g, yajl_val v)
{
	bool ok = true;

	if (v == NULL)
		return yajl_gen_null(g) == yajl_gen_status_ok;
	switch (v->type) {
	case yajl_t_string:
		return gen_str(g, v->u.string);
	case yajl_t_number:
		return yajl_gen_number(g, v->u.number.r,
				       strlen(v->u.number.r)) ==
		       yajl_gen_status_ok;
	case yajl_t_object:
		ok = yajl_gen_map_open(g) == yajl_gen_status_ok;
		for (size_t i = 0; ok && i < v->u.object.len; i++)
			ok = gen_str(g, v->u.object.keys[i]) &&
			     gen_value(g, v->u.object.values[i]);
		return ok && yajl_gen_map_close(g) == yajl_gen_status_ok;
	case yajl_t_array:
		ok = yajl_gen_array_open(g) == yajl_gen_status_ok;
		for (size_t i = 0; ok && i < v->u.array.len; i++)
			ok = gen_value(g, v->u.array.values[i]);
		return ok && yajl_gen_array_close(g) == yajl_gen_status_ok;
	case yajl_t_true:
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok;
	case yajl_t_false:
		return yajl_gen_bool(g, 0) == yajl_gen_status_ok;
	default:
		return yajl_gen_null(g) == yajl_gen_status_ok;
	}
}

/* Start a reply: {"jsonrpc":"2.0", and the caller adds result or error. */
static bool gen_begin(yajl_gen g)
{
	yajl_gen_clear(g);
	yajl_gen_reset(g, NULL);
	return yajl_gen_map_open(g) == yajl_gen_status_ok &&
	       gen_str(g, "jsonrpc") && gen_str(g, "2.0");
}

/* End a reply with "id": id} (null when id is NULL). */
static bool gen_end(yajl_gen g, yajl_val id)
{
	return gen_str(g, "id") && gen_value(g, id) &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

bool rpc_gen_error(yajl_gen g, int code, const char *message, const char *data,
		   yajl_val id)
{
	return gen_begin(g) && gen_str(g, "error") &&
	       yajl_gen_map_open(g) == yajl_gen_status_ok &&
	       gen_str(g, "code") &&
	       yajl_gen_integer(g, code) == yajl_gen_status_ok &&
	       gen_str(g, "message") && gen_str(g, message) &&
	       (data == NULL || (gen_str(g, "data") && gen_str(g, data))) &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok && gen_end(g, id);
}

/* ---- Methods --------------------------------------------------------- */

/* The value of `key` in object `obj` (the first, if repeated), or NULL. */
static yajl_val member(yajl_val obj, const char *key)
{
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (strcmp(obj->u.object.keys[i], key) == 0)
			return obj->u.object.values[i];
	return NULL;
}

static bool has_member(yajl_val obj, const char *key)
{
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (strcmp(obj->u.object.keys[i], key) == 0)
			return true;
	return false;
}

/* sleep's milliseconds from {"ms": N} or [N], or -1. */
static long sleep_params(yajl_val params)
{
	yajl_val n = NULL;

	if (YAJL_IS_OBJECT(params) && params->u.object.len == 1)
		n = member(params, "ms");
	else if (YAJL_IS_ARRAY(params) && params->u.array.len == 1)
		n = params->u.array.values[0];
	if (!YAJL_IS_NUMBER(n) ||
	    !(n->u.number.flags & YAJL_NUMBER_INT_VALID) ||
	    strpbrk(n->u.number.r, ".eE") != NULL || n->u.number.i < 0 ||
	    n->u.number.i > RPC_SLEEP_MAX)
		return -1;
	return (long)n->u.number.i;
}

/*
 * Answer one request (a parsed object) into the generator.  Returns false
 * if no reply is due: a valid notification.  *ms is set for a sleep.
 */
bool rpc_handle_request(struct rpc *r, yajl_val req, long *ms, bool *ok)
{
	yajl_gen g = r->g;
	yajl_val id = member(req, "id");
	yajl_val version = member(req, "jsonrpc");
	yajl_val method = member(req, "method");
	yajl_val params = member(req, "params");
	bool notification = !has_member(req, "id");
	const char *name;

	if (id != NULL && !YAJL_IS_STRING(id) && !YAJL_IS_NUMBER(id) &&
	    !YAJL_IS_NULL(id)) {
		*ok = rpc_gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
				    "id must be a string, a number or null",
				    NULL);
		return true;
	}
	if (!YAJL_IS_STRING(version) || strcmp(version->u.string, "2.0") != 0) {
		*ok = rpc_gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
				    "jsonrpc must be \"2.0\"", id);
		return true;
	}
	if (!YAJL_IS_STRING(method)) {
		*ok = rpc_gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
				    "method must be a string", id);
		return true;
	}
	/* A valid notification: no reply, even for an error (JSON-RPC 2.0,
	 * section 4.1); a sleep would delay nothing anyone waits for. */
	if (notification)
		return false;
	name = method->u.string;
	if (strcmp(name, "ping") == 0) {
		*ok = gen_begin(g) && gen_str(g, "result") &&
		      gen_str(g, "pong") && gen_end(g, id);
	} else if (strcmp(name, "echo") == 0) {
		*ok = gen_begin(g) && gen_str(g, "result") &&
		      gen_value(g, params) && gen_end(g, id);
	} else if (strcmp(name, "worker") == 0) {
		*ok = gen_begin(g) && gen_str(g, "result") &&
		      yajl_gen_map_open(g) == yajl_gen_status_ok &&
		      gen_str(g, "id") &&
		      yajl_gen_integer(g, fpool_worker_id(r->w)) ==
			      yajl_gen_status_ok &&
		      gen_str(g, "pid") &&
		      yajl_gen_integer(g, fpool_worker_pid(r->w)) ==
			      yajl_gen_status_ok &&
		      gen_str(g, "requests") &&
		      yajl_gen_integer(g, r->requests) == yajl_gen_status_ok &&
		      yajl_gen_map_close(g) == yajl_gen_status_ok &&
		      gen_end(g, id);
	} else if (strcmp(name, "sleep") == 0) {
		*ms = sleep_params(params);
		if (*ms < 0)
			*ok = rpc_gen_error(
				g, RPC_INVALID_PARAMS, "Invalid params",
				"sleep takes {\"ms\": N} or [N], N an "
				"integer from 0 to 60000",
				id);
		else
			*ok = gen_begin(g) && gen_str(g, "result") &&
			      yajl_gen_bool(g, 1) == yajl_gen_status_ok &&
			      gen_end(g, id);
	} else {
		*ok = rpc_gen_error(g, RPC_METHOD_NOT_FOUND, "Method not found",
				    "methods: ping, echo, worker, sleep", id);
	}
	return true;
}

/* yajl_gen keeps the largest buffer it needed: after a big reply (that
 * reply is copied already), start over with a fresh generator.  If none
 * can be had, the old one serves on. */
void rpc_gen_shrink(struct rpc *r)
{
	const unsigned char *buf;
	size_t len;
	yajl_gen g;

	if (yajl_gen_get_buf(r->g, &buf, &len) != yajl_gen_status_ok ||
	    len <= RPC_GEN_KEEP)
		return;
	g = yajl_gen_alloc(NULL);
	if (g == NULL)
		return;
	yajl_gen_free(r->g);
	r->g = g;
}
