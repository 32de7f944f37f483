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
 * invalid request (a string that is not Unicode text too: the escape of
 * a lone surrogate, see prescan, or ill-formed UTF-8, see tree_is_utf8),
 * -32601 method not found, -32602 invalid params; the connection stays
 * usable.  A notification (no id) gets no reply.  A line over
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
 * and close each connection once it has been idle for RPC_STOP_GRACE (or
 * the idle timeout, if shorter); a client that half-closed is closed as
 * soon as its answers are sent.  SIGINT: close everything at once.
 *
 * It uses only the public API, as any worker written outside the tree.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "forkpool.h"

#define RPC_MAX_LINE (1024 * 1024) /* bytes, newline excluded */
/* Deepest nesting of arrays and objects accepted in a request.  yajl_gen
 * refuses to go deeper than YAJL_MAX_DEPTH (128) and yajl_tree_free()
 * recurses, so a request of "[[[[..." must be refused before parsing. */
#define RPC_MAX_DEPTH  100
#define RPC_SLEEP_MAX  60000 /* ms */
#define RPC_STOP_GRACE 1     /* s an idle connection stays open after stop */
#define RPC_LINGER     2     /* s we read (and drop) after refusing a line */
/* Default --idle-timeout, s.  JSON-RPC clients keep a connection for a
 * series of calls, with pauses between them that are short next to a
 * minute (and a sleep in flight does not count as idle), while a client
 * that vanished without a FIN (a crashed host, a dropped NAT entry)
 * would otherwise hold its descriptor and buffers for ever. */
#define RPC_IDLE_TIMEOUT 60
/* Input is read up to a little more than one line of the largest size,
 * so a line that is too long is seen as such, and no more. */
#define RPC_READ_MAX (RPC_MAX_LINE + 4096)
/* An upper bound on one reply: an echo re-encodes its line's values (an
 * escape never grows, whitespace goes) inside a short envelope; every
 * other reply is small. */
#define RPC_MAX_REPLY (RPC_MAX_LINE + 8192)
/* Bytes one connection may hold: queued replies, output not yet written
 * and input not yet answered.  No line is answered once the replies
 * waiting reach RPC_CONN_REPLIES_MAX, so one more reply and a full input
 * buffer still fit under RPC_CONN_MAX_BYTES. */
#define RPC_CONN_MAX_BYTES   (4 * 1024 * 1024)
#define RPC_CONN_REPLIES_MAX (RPC_CONN_MAX_BYTES - RPC_READ_MAX - RPC_MAX_REPLY)
/* Replies queued on one connection (each a sleep's timer at most). */
#define RPC_MAX_PENDING 1024
/* Bytes all connections together may hold before the worker stops
 * reading every connection that has replies waiting; it reads them again
 * once under RPC_WORKER_RESUME (the gap keeps it from switching at every
 * write). */
#define RPC_WORKER_MAX_BYTES (64 * 1024 * 1024)
#define RPC_WORKER_RESUME    (RPC_WORKER_MAX_BYTES - 8 * 1024 * 1024)
/* glibc serves a block of at least this size with its own mmap(), so
 * freeing it gives the memory back to the system (see rpc_on_start). */
#define RPC_MMAP_THRESHOLD (128 * 1024)
/* The reply generator keeps its largest buffer; one that grew past this
 * is replaced, so one big reply does not stay in memory for good. */
#define RPC_GEN_KEEP (64 * 1024)
/* Input is read 16 KiB at a time, into blocks the heap serves.  Once
 * this many bytes were freed since the heap was last trimmed, a closing
 * connection has it trimmed again, at most every RPC_TRIM_DELAY_MS. */
#define RPC_TRIM_AFTER	  (1024 * 1024)
#define RPC_TRIM_DELAY_MS 100

enum {
	RPC_PARSE_ERROR = -32700,
	RPC_INVALID_REQUEST = -32600,
	RPC_METHOD_NOT_FOUND = -32601,
	RPC_INVALID_PARAMS = -32602,
	RPC_INTERNAL_ERROR = -32603,
};

enum conn_state {
	CONN_OPEN,    /* reading requests */
	CONN_CLOSING, /* the client half-closed: answer, flush, close */
	CONN_LINGER,  /* a line was refused: flush, shut down, drop input */
};

struct rpc;
struct rpc_conn;

/* A reply that must wait: for a sleep, or for replies queued before it.
 * Once due it moves to the output buffer as is (a reference: no copy),
 * which frees it once written. */
struct rpc_reply {
	struct rpc_reply *next;
	struct rpc_conn *c;
	struct event *timer; /* a sleep's; NULL once due */
	size_t len;
	char data[]; /* the reply line, newline included */
};

struct rpc_conn {
	struct bufferevent *bev;
	struct rpc *rpc;
	struct rpc_conn *prev, *next;
	struct rpc_reply *head, *tail; /* in request order */
	size_t npending;
	size_t queued; /* bytes of the replies in the queue */
	/* Our callbacks counting what the input and output buffers hold. */
	struct evbuffer_cb_entry *in_cb, *out_cb;
	/* CONN_OPEN: the idle timeout (the stop grace once stopping);
	 * CONN_LINGER: the linger. */
	struct event *timer;
	enum conn_state state;
	bool shut; /* CONN_LINGER: our side is shut down */
};

struct rpc {
	struct fpool_worker *w;
	struct fpool_acceptor **acceptors;
	size_t nacceptors;
	struct rpc_conn *conns;
	yajl_gen g; /* reused for every reply */
	long long requests;
	struct timeval idle_timeout;
	/* Bytes held for all connections (what RPC_CONN_MAX_BYTES counts,
	 * summed), and whether it passed RPC_WORKER_MAX_BYTES. */
	size_t held;
	bool over;
	struct event *wake; /* reconsiders every connection after `over` */
	struct event *trim; /* gives freed memory back to the system */
	size_t freed;	    /* bytes no longer held since the last trim */
	bool stopping;
};

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

static bool gen_error(yajl_gen g, int code, const char *message,
		      const char *data, yajl_val id)
{
	return gen_begin(g) && gen_str(g, "error") &&
	       yajl_gen_map_open(g) == yajl_gen_status_ok &&
	       gen_str(g, "code") &&
	       yajl_gen_integer(g, code) == yajl_gen_status_ok &&
	       gen_str(g, "message") && gen_str(g, message) &&
	       (data == NULL || (gen_str(g, "data") && gen_str(g, data))) &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok && gen_end(g, id);
}

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

static void held_sub(struct rpc *r, size_t n)
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
static void buf_count_cb(struct evbuffer *buf,
			 const struct evbuffer_cb_info *info, void *arg)
{
	struct rpc_conn *c = arg;

	(void)buf;
	if (info->n_added > info->n_deleted)
		held_add(c->rpc, info->n_added - info->n_deleted);
	else if (info->n_deleted > info->n_added)
		held_sub(c->rpc, info->n_deleted - info->n_added);
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
static bool waiting(struct rpc_conn *c)
{
	return c->head != NULL || out_len(c) > 0;
}

/* No further line is answered for now: too many replies wait, or too
 * many bytes, on this connection or (for one with replies waiting) in
 * the whole worker. */
static bool throttled(struct rpc_conn *c)
{
	return c->npending >= RPC_MAX_PENDING ||
	       c->queued + out_len(c) >= RPC_CONN_REPLIES_MAX ||
	       (c->rpc->over && waiting(c));
}

/* ---- Queueing replies ------------------------------------------------ */

static void reply_free(struct rpc_reply *rp)
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
		held_sub(c->rpc, reply_cost(rp));
		if (evbuffer_add_reference(out, rp->data, rp->len,
					   reply_written_cb, rp) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: out of memory; a reply is lost");
			free(rp);
		}
	}
}

static void conn_kick(struct rpc_conn *c);

static void sleep_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc_reply *rp = arg;
	struct rpc_conn *c = rp->c;

	(void)fd;
	(void)what;
	event_free(rp->timer);
	rp->timer = NULL;
	conn_flush(c);
	conn_kick(c);
}

/* Queue the reply in g's buffer, due after `ms` (-1: at once). */
static void conn_reply(struct rpc_conn *c, long ms)
{
	const unsigned char *buf;
	size_t len;
	struct rpc_reply *rp;

	yajl_gen_get_buf(c->rpc->g, &buf, &len);
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

/* ---- Requests -------------------------------------------------------- */

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

/* The code unit written as 4 hex digits at s (either case), or -1. */
static long hex4(const char *s)
{
	long v = 0;

	for (int i = 0; i < 4; i++) {
		char ch = s[i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			v |= ch - 'A' + 10;
		else
			return -1;
	}
	return v;
}

#define IS_HIGH_SURROGATE(u) ((u) >= 0xd800 && (u) <= 0xdbff)
#define IS_LOW_SURROGATE(u)  ((u) >= 0xdc00 && (u) <= 0xdfff)

/*
 * What yajl_tree cannot take: nesting deeper than RPC_MAX_DEPTH, a
 * \u0000 escape in a string (its strings end at the first NUL, so the
 * value would change), and the escape of a lone surrogate.  yajl decodes
 * a high surrogate not followed by a low one into something else ("?",
 * or with the next escape into a character never sent: "\ud800\u0041"
 * becomes U+10041) and a lone low one into bytes that are not UTF-8, so
 * the decoded tree cannot tell; the line still can.  Strings and comments
 * (yajl_tree_parse allows them) are skipped; anything that is not JSON
 * is left to yajl.  Returns the reason for a refusal, or NULL.
 */
static const char *prescan(const char *s, size_t len)
{
	int depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		if (in_str) {
			if (s[i] == '"') {
				in_str = false;
			} else if (s[i] == '\\' && i + 1 < len) {
				long u = s[i + 1] == 'u' && i + 5 < len
						 ? hex4(s + i + 2)
						 : -1;

				if (u == 0)
					return "\\u0000 in a string is not "
					       "supported";
				if (IS_HIGH_SURROGATE(u) && i + 11 < len &&
				    s[i + 6] == '\\' && s[i + 7] == 'u' &&
				    IS_LOW_SURROGATE(hex4(s + i + 8))) {
					i += 11; /* a pair: one character */
					continue;
				}
				if (IS_HIGH_SURROGATE(u) || IS_LOW_SURROGATE(u))
					return "a string is not Unicode text "
					       "(the escape of a lone "
					       "surrogate)";
				/* Past the escape: a backslash, 'u' and four
				 * hex digits, or a backslash and one character
				 * (yajl judges it). */
				i += u >= 0 ? 5 : 1;
			}
			continue;
		}
		switch (s[i]) {
		case '"':
			in_str = true;
			break;
		case '[':
		case '{':
			if (++depth > RPC_MAX_DEPTH)
				return "nested too deeply";
			break;
		case ']':
		case '}':
			depth--;
			break;
		case '/':
			if (i + 1 < len && s[i + 1] == '/')
				return NULL; /* a comment to the end */
			if (i + 1 < len && s[i + 1] == '*') {
				const char *end = NULL;

				for (size_t j = i + 2; j + 1 < len; j++)
					if (s[j] == '*' && s[j + 1] == '/') {
						end = s + j;
						break;
					}
				if (end == NULL)
					return NULL; /* yajl rejects it */
				i = (size_t)(end - s) + 1;
			}
			break;
		default:
			break;
		}
	}
	return NULL;
}

/* Every string (and object key) in v is well-formed UTF-8.  yajl lets
 * some ill-formed raw bytes through (and would turn the escape of a lone
 * surrogate into such bytes, had prescan not refused it): written back,
 * they would make a reply that is not JSON text. */
static bool tree_is_utf8(yajl_val v)
{
	size_t i;

	if (YAJL_IS_STRING(v))
		return fpool_utf8_valid(v->u.string, strlen(v->u.string));
	if (YAJL_IS_ARRAY(v)) {
		for (i = 0; i < v->u.array.len; i++)
			if (!tree_is_utf8(v->u.array.values[i]))
				return false;
	} else if (YAJL_IS_OBJECT(v)) {
		for (i = 0; i < v->u.object.len; i++)
			if (!fpool_utf8_valid(v->u.object.keys[i],
					      strlen(v->u.object.keys[i])) ||
			    !tree_is_utf8(v->u.object.values[i]))
				return false;
	}
	return true;
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
static bool handle_request(struct rpc *r, yajl_val req, long *ms, bool *ok)
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
		*ok = gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
				"id must be a string, a number or null", NULL);
		return true;
	}
	if (!YAJL_IS_STRING(version) || strcmp(version->u.string, "2.0") != 0) {
		*ok = gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
				"jsonrpc must be \"2.0\"", id);
		return true;
	}
	if (!YAJL_IS_STRING(method)) {
		*ok = gen_error(g, RPC_INVALID_REQUEST, "Invalid Request",
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
			*ok = gen_error(g, RPC_INVALID_PARAMS, "Invalid params",
					"sleep takes {\"ms\": N} or [N], N an "
					"integer from 0 to 60000",
					id);
		else
			*ok = gen_begin(g) && gen_str(g, "result") &&
			      yajl_gen_bool(g, 1) == yajl_gen_status_ok &&
			      gen_end(g, id);
	} else {
		*ok = gen_error(g, RPC_METHOD_NOT_FOUND, "Method not found",
				"methods: ping, echo, worker, sleep", id);
	}
	return true;
}

/* yajl_gen keeps the largest buffer it needed: after a big reply (that
 * reply is copied already), start over with a fresh generator.  If none
 * can be had, the old one serves on. */
static void gen_shrink(struct rpc *r)
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

/* Answer one line (NUL-terminated, newline removed). */
static void handle_line(struct rpc_conn *c, char *line, size_t len)
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
		ok = gen_error(r->g, RPC_PARSE_ERROR, "Parse error",
			       "a NUL byte in the line", NULL);
	} else if ((why = prescan(line, len)) != NULL) {
		ok = gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
			       why, NULL);
	} else if ((req = yajl_tree_parse(line, err, sizeof(err))) == NULL) {
		/* The first line of yajl's message; the rest quotes the
		 * input. */
		err[strcspn(err, "\n")] = '\0';
		ok = gen_error(r->g, RPC_PARSE_ERROR, "Parse error", err, NULL);
	} else if (!YAJL_IS_OBJECT(req)) {
		ok = gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
			       "a request is a JSON object", NULL);
	} else if (!tree_is_utf8(req)) {
		ok = gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
			       "a string is not Unicode text (ill-formed "
			       "UTF-8, or the escape of a lone surrogate)",
			       NULL);
	} else {
		reply = handle_request(r, req, &ms, &ok);
	}
	if (reply && !ok) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot generate a reply");
		ms = -1;
		ok = gen_error(r->g, RPC_INTERNAL_ERROR, "Internal error", NULL,
			       NULL);
	}
	if (reply && ok)
		conn_reply(c, ms);
	yajl_tree_free(req);
	gen_shrink(r);
}

/* ---- Connections ----------------------------------------------------- */

static void conn_free(struct rpc_conn *c)
{
	struct rpc *r = c->rpc;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct rpc_reply *rp;
	size_t held = c->queued;

	while ((rp = c->head) != NULL) {
		c->head = rp->next;
		reply_free(rp);
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
	held_sub(r, held);
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

static void trim_cb(evutil_socket_t fd, short what, void *arg)
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
	struct timeval grace = { RPC_STOP_GRACE, 0 };
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
static bool conn_update(struct rpc_conn *c)
{
	struct timeval linger = { RPC_LINGER, 0 };
	int fd;

	switch (c->state) {
	case CONN_OPEN:
		/* Waiting for a sleep, or for the client to read, is not
		 * idle; the output has a timeout of its own. */
		if (waiting(c)) {
			event_del(c->timer);
		} else if (arm_idle(c) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot arm the idle timer; "
				  "closing an idle connection now");
			conn_free(c);
			return false;
		}
		break;
	case CONN_CLOSING:
		if (!waiting(c) &&
		    evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
			conn_free(c);
			return false;
		}
		break;
	case CONN_LINGER:
		if (waiting(c) || c->shut)
			break;
		/* The refusal is sent: shut our side down and read what
		 * the client still sends, so that closing does not reset
		 * the connection before it has read the reply. */
		fd = bufferevent_getfd(c->bev);
		if (shutdown(fd, SHUT_WR) < 0) {
			fpool_log(FPOOL_LOG_DEBUG,
				  "jsonrpc: shutdown of fd %d: %s", fd,
				  strerror(errno));
			conn_free(c);
			return false;
		}
		c->shut = true;
		if (evtimer_add(c->timer, &linger) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot arm the linger timer; "
				  "closing now");
			conn_free(c);
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

	if (gen_error(c->rpc->g, RPC_INVALID_REQUEST, "request too large", NULL,
		      NULL))
		conn_reply(c, -1);
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

	while (c->state != CONN_LINGER && !throttled(c)) {
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
			conn_free(c);
			return false;
		}
		len = (size_t)eol.pos;
		evbuffer_remove(in, line, len);
		evbuffer_drain(in, eol_len);
		line[len] = '\0';
		handle_line(c, line, len);
		free(line);
	}
	if (c->state == CONN_LINGER)
		evbuffer_drain(in, evbuffer_get_length(in));
	else if (c->state == CONN_OPEN && throttled(c))
		bufferevent_disable(c->bev, EV_READ);
	return conn_update(c);
}

/* Output went out, a sleep ended or the worker holds less: read again if
 * we had stopped, and answer what waits. */
static void conn_kick(struct rpc_conn *c)
{
	if (c->state == CONN_OPEN && !throttled(c) &&
	    !(bufferevent_get_enabled(c->bev) & EV_READ) &&
	    bufferevent_enable(c->bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot read from a "
					   "connection again; closing it");
		conn_free(c);
		return;
	}
	conn_process(c);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rpc *r = arg;
	struct rpc_conn *c, *next;

	(void)fd;
	(void)what;
	/* conn_kick() may free c, never another connection. */
	for (c = r->conns; c != NULL; c = next) {
		next = c->next;
		conn_kick(c);
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
	conn_kick(arg);
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
			  c->rpc->idle_timeout.tv_sec +
				  c->rpc->idle_timeout.tv_usec / 1e6);
	else if (what & BEV_EVENT_ERROR)
		fpool_log(FPOOL_LOG_DEBUG, "jsonrpc: connection error: %s",
			  evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	conn_free(c);
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
			  c->rpc->idle_timeout.tv_sec +
				  c->rpc->idle_timeout.tv_usec / 1e6);
	conn_free(c);
}

static void accept_cb(struct fpool_acceptor *a, int fd,
		      const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct rpc *r = arg;
	struct event_base *base = fpool_worker_base(r->w);
	struct rpc_conn *c;
	int one = 1;

	(void)a;
	(void)salen;
	/* Small replies, often pipelined: no Nagle delay. */
	if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
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
	/* From here on conn_free() undoes what was done. */
	c->next = r->conns;
	if (r->conns != NULL)
		r->conns->prev = c;
	r->conns = c;
	c->timer = evtimer_new(base, conn_timer_cb, c);
	c->in_cb =
		evbuffer_add_cb(bufferevent_get_input(c->bev), buf_count_cb, c);
	c->out_cb = evbuffer_add_cb(bufferevent_get_output(c->bev),
				    buf_count_cb, c);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb,
			  c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, RPC_READ_MAX);
	if (c->timer == NULL || c->in_cb == NULL || c->out_cb == NULL ||
	    bufferevent_set_timeouts(c->bev, NULL, &r->idle_timeout) != 0 ||
	    bufferevent_enable(c->bev, EV_READ) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "jsonrpc: cannot set up a connection");
		conn_free(c);
		return;
	}
	conn_update(c); /* the idle timeout starts */
}

/* ---- Listeners and the worker ------------------------------------------ */

static void close_listeners(struct rpc *r)
{
	/* FPOOL_ACCEPT_CLOSE closes this worker's copy only: the master and
	 * the other workers keep the socket. */
	for (size_t i = 0; i < r->nacceptors; i++)
		fpool_acceptor_free(r->acceptors[i]);
	r->nacceptors = 0;
}

/* Free everything; connections still open are closed at once. */
static void rpc_release(struct rpc *r)
{
	while (r->conns != NULL)
		conn_free(r->conns);
	close_listeners(r);
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

/* --idle-timeout's value into *tv; one error line and -1 if bad. */
static int parse_idle_timeout(const char *s, struct timeval *tv)
{
	double sec;
	int err = fpool_duration_parse(s, &sec);

	if (err != 0) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: --idle-timeout '%s': %s",
			  s,
			  err == -ERANGE ? "out of range (more than 0, at "
					   "most a week)"
					 : "not a duration such as 30, 2.5s, "
					   "500ms or 1m");
		return -1;
	}
	tv->tv_sec = (time_t)sec;
	tv->tv_usec = (suseconds_t)((sec - (double)tv->tv_sec) * 1e6);
	if (tv->tv_sec == 0 && tv->tv_usec == 0)
		tv->tv_usec = 1; /* libevent would take 0 for "none" */
	return 0;
}

/* The worker arguments: --idle-timeout SEC (or --idle-timeout=SEC). */
static int rpc_setup(struct fpool_worker *w, int argc, char **argv)
{
	static const char opt[] = "--idle-timeout";
	struct rpc *r = calloc(1, sizeof(*r));

	if (r == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: out of memory");
		return -ENOMEM;
	}
	r->idle_timeout.tv_sec = RPC_IDLE_TIMEOUT;
	for (int i = 1; i < argc; i++) {
		const char *value;

		if (strcmp(argv[i], opt) == 0) {
			if (i + 1 == argc) {
				fpool_log(FPOOL_LOG_ERROR,
					  "jsonrpc: %s needs a value, such "
					  "as 30, 2.5s, 500ms or 1m",
					  opt);
				goto fail;
			}
			value = argv[++i];
		} else if (strncmp(argv[i], opt, sizeof(opt) - 1) == 0 &&
			   argv[i][sizeof(opt) - 1] == '=') {
			value = argv[i] + sizeof(opt);
		} else {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: unknown worker argument '%s' "
				  "(jsonrpc takes %s SEC)",
				  argv[i], opt);
			goto fail;
		}
		if (parse_idle_timeout(value, &r->idle_timeout) != 0)
			goto fail;
	}
	fpool_worker_set_data(w, r);
	return 0;
fail:
	free(r);
	return -EINVAL;
}

static int rpc_on_start(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);
	struct event_base *base = fpool_worker_base(w);
	size_t n;
	const int *fds = fpool_worker_listeners(w, &n);

	(void)arg;
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
	r->wake = event_new(base, -1, 0, wake_cb, r);
	r->trim = evtimer_new(base, trim_cb, r);
	r->g = yajl_gen_alloc(NULL);
	if (r->acceptors == NULL || r->wake == NULL || r->trim == NULL ||
	    r->g == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot set up the server");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		int err = fpool_acceptor_new(&r->acceptors[r->nacceptors], base,
					     fds[i], FPOOL_ACCEPT_CLOSE,
					     accept_cb, r);

		if (err != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "jsonrpc: cannot accept on fd %d: %s", fds[i],
				  fpool_strerror(err));
			return err;
		}
		r->nacceptors++;
	}
	return 0;
}

static int rpc_on_stop(struct fpool_worker *w, void *arg)
{
	struct rpc *r = fpool_worker_data(w);
	struct rpc_conn *c, *next;

	(void)arg;
	r->stopping = true;
	close_listeners(r);
	/* Idle connections get their grace now, instead of the rest of
	 * their idle timeout; busy ones once their replies are out
	 * (conn_update). */
	for (c = r->conns; c != NULL; c = next) {
		next = c->next;
		if (c->state == CONN_OPEN)
			event_del(c->timer);
		conn_update(c);
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
