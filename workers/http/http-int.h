/*
 * The http worker's private header: what its files share.  workers/http.c
 * is the worker (its arguments, start and stop); workers/http/ holds the
 * rest, one concept per file:
 *
 *   conn.c      a connection and its I/O loop: accept, read, send, close
 *   deadline.c  the clock, and a connection's deadlines and timer
 *   parse.c     the request parsing glue on llhttp
 *   response.c  answers, their header lines and the Date cache
 *   routes.c    what GET / and GET /sleep answer, and the activity
 *
 * The functions declared here keep the names they had as the statics of
 * one file: tests/fuzz/fuzz-http.c compiles workers/http.c into its
 * target and calls several of them (and reads these structs) itself.
 * They are hidden, so the forkpool program does not export them.
 */
#ifndef FPOOL_WORKERS_HTTP_INT_H
#define FPOOL_WORKERS_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <llhttp.h>

#include "forkpool.h"

#define HTTP_HEADER_TIMEOUT 10.0  /* s, --header-timeout */
#define HTTP_IDLE_TIMEOUT   5.0	  /* s, --idle-timeout */
#define HTTP_SLEEP_MAX	    60000 /* ms */
#define HTTP_MAX_HEADERS    (16 * 1024)
#define HTTP_MAX_BODY	    (64 * 1024)
/* One recv() reads at most this much, into a buffer all connections
 * share. */
#define HTTP_READ_SIZE (64 * 1024)
/* Answers waiting for a peer that does not read: parsing stops above
 * HTTP_OUT_HIGH and goes on below HTTP_OUT_LOW. */
#define HTTP_OUT_HIGH (256 * 1024)
#define HTTP_OUT_LOW  (64 * 1024)
/* A connection's buffers that grew past this (a burst of pipelined
 * requests) are freed once empty, so that idle connections stay small. */
#define HTTP_BUF_KEEP	(16 * 1024)
#define HTTP_URL_INLINE 256
/* A timer due this close to its deadline counts as expired (the loop's
 * clock and ours may differ by a tick). */
#define HTTP_SLACK 0.002

struct http;

/* Where a connection is in its current request. */
enum conn_phase {
	PH_IDLE,    /* waiting for the first byte of a request */
	PH_HEADERS, /* reading a request line and headers */
	PH_BODY,    /* reading a request body */
	PH_BUSY,    /* a request waits for its answer (/sleep) */
	PH_LINGER,  /* answered and shut down: dropping input, then close */
};

/* How the answer to a request ends the exchange. */
enum {
	R_HEAD = 1 << 0,  /* HEAD: no body */
	R_CLOSE = 1 << 1, /* "Connection: close", and close after it */
	R_KA10 = 1 << 2,  /* HTTP/1.0 kept alive: "Connection: keep-alive" */
	R_ALLOW = 1 << 3, /* "Allow: GET, HEAD" */
};

struct conn {
	struct http *h;
	struct conn *prev, *next;   /* h->conns */
	struct conn *sprev, *snext; /* h->sleepers */
	int fd;
	enum conn_phase phase;
	bool reading;	 /* rev is added */
	bool writing;	 /* wev is added */
	bool timer_on;	 /* timer is added, due at timer_at */
	bool closing;	 /* the last answer is queued: flush, then close */
	bool linger;	 /* ...with a linger (input may be left unread) */
	bool out_full;	 /* parsing stopped: too many answers unsent */
	bool eof;	 /* the client shut down its side */
	bool broken;	 /* out of memory: close at once */
	bool reparse;	 /* resume at the ';' before the pause (see probe) */
	bool ext_quoted; /* the chunk extension value is a quoted string */
	bool ext_value;	 /* ...and its first byte was seen */
	bool in_expect;	 /* the header field being read is Expect */
	bool expect_continue, expect_other;
	bool field_long;
	bool expect_long; /* the Expect value did not fit in expect[] */
	int err_status;	  /* an answer a parser callback decided */
	unsigned long nreq;
	llhttp_t parser;
	/* Input received but not parsed yet (parsing stopped). */
	char *in;
	size_t in_off, in_len, in_cap;
	/* Answers not sent yet. */
	char *out;
	size_t out_off, out_len, out_cap;
	/* The request being parsed: its target, and for the header limit the
	 * header bytes of earlier reads and where they start in this one. */
	char *url;
	size_t url_len, url_cap;
	size_t hdr_carry;
	const char *hdr_base;
	const char *exec_start, *exec_end; /* bytes given to llhttp_execute */
	size_t body_bytes; /* body, chunk extensions, trailers */
	char field[8];
	size_t field_len;
	char expect[16];
	size_t expect_len;
	/* A /sleep waiting for its timer. */
	unsigned long sleep_ms;
	unsigned sleep_flags;
	/* Anchors of the deadlines (monotonic seconds). */
	double req_start;  /* first byte of the request (first: accept) */
	double body_start; /* end of the headers */
	double idle_since; /* last answer sent, waiting for a request */
	double send_since; /* last progress of a blocked send */
	double linger_at;
	double timer_at;
	struct event *rev, *wev, *timer, *sleep_ev;
	char url_inline[HTTP_URL_INLINE];
	/* The four events follow, in the same allocation. */
};

struct http {
	struct fpool_worker *w;
	struct event_base *base;
	struct fpool_acceptor **acceptors;
	size_t nacceptors;
	struct conn *conns;
	struct conn *sleepers; /* connections in a /sleep, for the activity */
	size_t event_size;     /* of a struct event, rounded up */
	double header_timeout, idle_timeout;
	double now; /* monotonic seconds, read at each callback */
	double stop_at;
	bool stopping;
	char *rbuf; /* HTTP_READ_SIZE, shared by all connections */
	/* "X-Pid: P\r\nX-Worker: W\r\n", and the body of GET /. */
	char ident[64];
	size_t ident_len;
	char hello[80];
	size_t hello_len;
	/* The Date header line, made once per second. */
	time_t date_sec;
	char date[48];
	size_t date_len;
};

/* Bytes of answers not sent yet. */
static inline size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

/* Whether received bytes wait to be parsed. */
static inline bool in_pending(const struct conn *c)
{
	return c->in_len > c->in_off;
}

#pragma GCC visibility push(hidden)

/* conn.c */
void buffers_trim(struct conn *c);
void conn_free(struct conn *c);
void conn_run(struct conn *c);
void conn_read_cb(evutil_socket_t fd, short what, void *arg);
void conn_write_cb(evutil_socket_t fd, short what, void *arg);
void accept_cb(struct fpool_acceptor *a, int fd, const struct sockaddr *sa,
	       socklen_t salen, void *arg);

/* deadline.c */
double mono_now(void);
void conn_arm(struct conn *c);
void conn_timer_cb(evutil_socket_t fd, short what, void *arg);

/* parse.c */
extern bool fix_ext_semicolon;
extern llhttp_settings_t parser_settings;
void parser_setup(void);
bool can_parse(const struct conn *c);
size_t conn_feed(struct conn *c, const char *data, size_t len);

/* response.c */
char *out_reserve(struct conn *c, size_t need);
const char *status_body(int status);
void conn_answer(struct conn *c, int status, const char *body, unsigned flags);
unsigned request_flags(struct conn *c);
unsigned answer_flags(struct conn *c, unsigned flags, bool more);
void conn_refuse(struct conn *c, int status, const char *why);

/* routes.c */
void sleeper_unlink(struct conn *c);
void sleep_done_cb(evutil_socket_t fd, short what, void *arg);
void conn_dispatch(struct conn *c, bool more);

#pragma GCC visibility pop

#endif /* FPOOL_WORKERS_HTTP_INT_H */
