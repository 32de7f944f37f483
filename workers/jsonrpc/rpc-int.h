/*
 * The jsonrpc worker's private header: what its files share.
 * workers/jsonrpc.c is the worker (its arguments, start and stop);
 * workers/jsonrpc/ holds the rest, one concept per file:
 *
 *   conn.c     a connection: reading lines, the idle timeout, the stop
 *              grace, the linger, closing
 *   flow.c     the memory bounds, and the queue that keeps replies in
 *              request order
 *   request.c  a line: fpool_json_check(), the parse, the checks of a request
 *   methods.c  the methods, and writing replies with yajl_gen
 *
 * The functions shared between files start with rpc_: both workers link
 * into the forkpool program, and the http worker's keep plain names.
 */
#ifndef FPOOL_WORKERS_RPC_INT_H
#define FPOOL_WORKERS_RPC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <yajl/yajl_tree.h>
#include <yajl/yajl_gen.h>

#include "forkpool.h"

#define RPC_MAX_LINE (1024 * 1024) /* bytes, newline excluded */
/* Deepest nesting of arrays and objects accepted in a request.  yajl_gen
 * refuses to go deeper than YAJL_MAX_DEPTH (128) and yajl_tree_free()
 * recurses, so a request of "[[[[..." must be refused before parsing. */
#define RPC_MAX_DEPTH 100
#define RPC_SLEEP_MAX 60000 /* ms */
/* Default --idle-timeout, s.  JSON-RPC clients keep a connection for a
 * series of calls, with pauses between them that are short next to a
 * minute (and a sleep in flight does not count as idle), while a client
 * that vanished without a FIN (a crashed host, a dropped NAT entry)
 * would otherwise hold its descriptor and buffers for ever. */
#define RPC_IDLE_TIMEOUT 60
/* Input is read up to a little more than one line of the largest size,
 * so a line that is too long is seen as such, and no more. */
#define RPC_READ_MAX (RPC_MAX_LINE + 4096)
/* Requests in one batch (a JSON array of requests, JSON-RPC 2.0 section
 * 6); a larger one is answered with one -32600 error. */
#define RPC_MAX_BATCH 1000
/* An upper bound on one reply's envelope, without the values it repeats
 * from the request (an id, an echo's params): the longest error object
 * is about 130 bytes. */
#define RPC_MAX_ENVELOPE 256
/* An upper bound on one reply line: an echo re-encodes its line's values
 * (an escape never grows, whitespace goes) inside a short envelope, and a
 * batch's reply has up to RPC_MAX_BATCH envelopes around values that all
 * come from its line.  A batch whose replies would pass it anyway is
 * answered with one error (request.c checks). */
#define RPC_MAX_REPLY (RPC_MAX_LINE + RPC_MAX_BATCH * RPC_MAX_ENVELOPE + 8192)
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

#pragma GCC visibility push(hidden)

/* conn.c */
void rpc_conn_free(struct rpc_conn *c);
bool rpc_conn_update(struct rpc_conn *c);
void rpc_conn_kick(struct rpc_conn *c);
void rpc_trim_cb(evutil_socket_t fd, short what, void *arg);
void rpc_wake_cb(evutil_socket_t fd, short what, void *arg);
void rpc_accept_cb(struct fpool_acceptor *a, int fd, const struct sockaddr *sa,
		   socklen_t salen, void *arg);

/* flow.c */
void rpc_held_sub(struct rpc *r, size_t n);
void rpc_buf_count_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
		      void *arg);
bool rpc_waiting(struct rpc_conn *c);
bool rpc_throttled(struct rpc_conn *c);
void rpc_reply_free(struct rpc_reply *rp);
void rpc_conn_reply(struct rpc_conn *c, long ms);
void rpc_conn_reply_data(struct rpc_conn *c, const char *buf, size_t len,
			 long ms);

/* request.c */
void rpc_handle_line(struct rpc_conn *c, char *line, size_t len);

/* methods.c */
bool rpc_gen_error(yajl_gen g, int code, const char *message, const char *data,
		   yajl_val id);
bool rpc_handle_request(struct rpc *r, yajl_val req, long *ms, bool *ok);
void rpc_gen_shrink(struct rpc *r);

#pragma GCC visibility pop

#endif /* FPOOL_WORKERS_RPC_INT_H */
