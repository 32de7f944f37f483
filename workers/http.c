/*
 * http: an HTTP/1.1 server on every listener the worker inherits, on
 * libevent's plain events, parsing with llhttp (Node's parser).
 *
 *   GET /              200 "hello from worker ID pid PID"
 *   GET /sleep?ms=N    200 after N ms (0..60000, else 400), without
 *                      blocking the loop: one timer per request
 *   other paths        404; methods other than GET and HEAD: 405, with
 *                      "Allow: GET, HEAD"
 * Every response carries Date, Content-Length (for HEAD what GET would
 * send, without the body), X-Pid and X-Worker.  Keep-alive (HTTP/1.1, and
 * HTTP/1.0 with "Connection: keep-alive"), pipelining (answers in request
 * order: a /sleep holds back the answers after it), "Expect: 100-continue",
 * request bodies by Content-Length or chunked (unknown chunk extensions
 * ignored, RFC 9112 7.1.1), read and dropped.  Answered, then closed: 400
 * for a malformed request, 413 for a body over HTTP_MAX_BODY, 431 for a
 * request line and headers over HTTP_MAX_HEADERS, 417 for an expectation
 * other than 100-continue, 505 for a version other than 1.x, 408 for a
 * request that did not arrive in time.
 *
 * Worker arguments (after `--` on forkpool's command line):
 *   --header-timeout SEC (10)  the request line and headers must have
 *                              arrived SEC after the request's first byte
 *                              (after the accept, for a connection's first
 *                              request), however they trickle in; the
 *                              body then has SEC again, from the end of
 *                              the headers
 *   --idle-timeout SEC (5)     a kept-alive connection waiting for its next
 *                              request is closed after SEC; so is one whose
 *                              peer took none of its answers for SEC
 *
 * The path of a request.  evhttp made about 7 syscalls per request (its
 * bufferevent switched the write event on and off for every response, 4
 * epoll_ctl, plus FIONREAD, readv, writev).  Here a connection has one
 * EV_READ event, added once.  A read is one recv() into a buffer all
 * connections share; the requests in it are parsed and answered into the
 * connection's output buffer, which one send() writes.  An EV_WRITE event
 * is added only when the socket is full, and removed once it drained.  So
 * a kept-alive connection costs recv, send and a share of an epoll_wait
 * per request, and no allocation: buffers are the connection's, reused.
 *
 * Flow control.  llhttp pauses at the end of every request
 * (on_message_complete), which is answered then, so answers keep their
 * order.  Parsing stops (the rest of the read is kept in the connection's
 * input buffer, and the connection is not read) while a /sleep waits, while
 * more than HTTP_OUT_HIGH of answers wait for a peer that does not read
 * them (until they are down to HTTP_OUT_LOW), and after an answer that
 * closes the connection.  A flood of pipelined requests from a peer that
 * never reads holds at most HTTP_OUT_HIGH plus one read.
 *
 * SIGTERM: stop accepting (free the acceptors: this worker's copies of the
 * listeners are closed), finish the requests in flight (sleeps too), and
 * answer every request that still arrives on a kept-alive connection with
 * "Connection: close", unless more of the client's input already waits
 * (pipelined, in our buffer or in the socket): then it goes into the last
 * answer only.  A connection waiting for a request (a kept-alive one, or
 * one that never sent any) is closed once it has been idle for
 * HTTP_STOP_GRACE after the stop.  A client sending requests back to back
 * therefore never has one cut off: it is told to go away in an answer,
 * never by a close racing its next request.  No event of the worker
 * outlives its last connection, so fpool_worker_loop() then returns.
 * SIGINT: everything is closed at once.
 *
 * It uses only the public API, as any worker written outside the tree.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <llhttp.h>

#include "forkpool.h"

#define HTTP_HEADER_TIMEOUT 10.0 /* s, --header-timeout */
#define HTTP_IDLE_TIMEOUT   5.0	 /* s, --idle-timeout */
/* Seconds a connection waiting for a request stays open after SIGTERM. */
#define HTTP_STOP_GRACE 1.0
/* After an answer that refused a request, our side is shut down and the
 * client's input read and dropped for up to this long, so that closing
 * with unread input (a reset) cannot destroy the answer before the client
 * read it. */
#define HTTP_LINGER	 2.0
#define HTTP_SLEEP_MAX	 60000 /* ms */
#define HTTP_MAX_HEADERS (16 * 1024)
#define HTTP_MAX_BODY	 (64 * 1024)
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

/* Worker arguments, parsed by setup() before on_start makes the state. */
static double opt_header_timeout = HTTP_HEADER_TIMEOUT;
static double opt_idle_timeout = HTTP_IDLE_TIMEOUT;

/* Whether this llhttp needs the chunk extension fix (see probe_llhttp). */
static bool fix_ext_semicolon;

static llhttp_settings_t parser_settings;

static void conn_run(struct conn *c);

/* ---- Time ------------------------------------------------------------- */

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* h->date: "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" (RFC 9110 5.6.7),
 * written by hand: strftime's names follow the locale. */
static void date_refresh(struct http *h)
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	time_t t = time(NULL);
	struct tm tm;
	int n;

	if (t == h->date_sec && h->date_len > 0)
		return;
	if (gmtime_r(&t, &tm) == NULL)
		return; /* keep the last one */
	n = snprintf(h->date, sizeof(h->date),
		     "Date: %.3s, %02d %.3s %04d %02d:%02d:%02d GMT\r\n",
		     days + 3 * tm.tm_wday, tm.tm_mday, months + 3 * tm.tm_mon,
		     tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (n > 0 && (size_t)n < sizeof(h->date)) {
		h->date_len = (size_t)n;
		h->date_sec = t;
	}
}

/* ---- Buffers ---------------------------------------------------------- */

static size_t out_pending(const struct conn *c)
{
	return c->out_len - c->out_off;
}

static bool in_pending(const struct conn *c)
{
	return c->in_len > c->in_off;
}

/* Room for `need` more bytes at the end of c->out; NULL when out of
 * memory (then the connection is marked broken). */
static char *out_reserve(struct conn *c, size_t need)
{
	size_t cap;
	char *p;

	if (c->out_off > 0 && c->out_len + need > c->out_cap) {
		memmove(c->out, c->out + c->out_off, out_pending(c));
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + need <= c->out_cap)
		return c->out + c->out_len;
	cap = c->out_cap ? c->out_cap : 1024;
	while (cap < c->out_len + need)
		cap *= 2;
	p = realloc(c->out, cap);
	if (p == NULL) {
		fpool_log(FPOOL_LOG_ERROR,
			  "http: out of memory for the answers on fd %d; "
			  "closing it",
			  c->fd);
		c->broken = true;
		return NULL;
	}
	c->out = p;
	c->out_cap = cap;
	return c->out + c->out_len;
}

/* Keep bytes that were received but not parsed (parsing stopped). */
static void in_keep(struct conn *c, const char *p, size_t n)
{
	size_t cap;
	char *b;

	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_len + n > c->in_cap) {
		cap = c->in_cap ? c->in_cap : 4096;
		while (cap < c->in_len + n)
			cap *= 2;
		b = realloc(c->in, cap);
		if (b == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: out of memory for the input of fd "
				  "%d; closing it",
				  c->fd);
			c->broken = true;
			return;
		}
		c->in = b;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, p, n);
	c->in_len += n;
}

/* Give back buffers a burst made large, if they are empty.  Called when
 * the connection's timer fires (every few seconds at most), not whenever
 * they empty: a client pipelining back to back would have them freed and
 * grown again at every read. */
static void buffers_trim(struct conn *c)
{
	if (c->out_off == c->out_len && c->out_cap > HTTP_BUF_KEEP) {
		free(c->out);
		c->out = NULL;
		c->out_cap = c->out_off = c->out_len = 0;
	}
	if (c->in_off == c->in_len && c->in_cap > HTTP_BUF_KEEP) {
		free(c->in);
		c->in = NULL;
		c->in_cap = c->in_off = c->in_len = 0;
	}
}

/* ---- Answers ---------------------------------------------------------- */

static const char *status_line(int status)
{
	switch (status) {
	case 200:
		return "HTTP/1.1 200 OK\r\n";
	case 400:
		return "HTTP/1.1 400 Bad Request\r\n";
	case 404:
		return "HTTP/1.1 404 Not Found\r\n";
	case 405:
		return "HTTP/1.1 405 Method Not Allowed\r\n";
	case 408:
		return "HTTP/1.1 408 Request Timeout\r\n";
	case 413:
		return "HTTP/1.1 413 Content Too Large\r\n";
	case 417:
		return "HTTP/1.1 417 Expectation Failed\r\n";
	case 431:
		return "HTTP/1.1 431 Request Header Fields Too Large\r\n";
	case 505:
		return "HTTP/1.1 505 HTTP Version Not Supported\r\n";
	default:
		return "HTTP/1.1 500 Internal Server Error\r\n";
	}
}

static const char *status_body(int status)
{
	switch (status) {
	case 400:
		return "bad request\n";
	case 404:
		return "not found\n";
	case 405:
		return "method not allowed\n";
	case 408:
		return "request timeout\n";
	case 413:
		return "request body too large\n";
	case 417:
		return "expectation failed\n";
	case 431:
		return "request header fields too large\n";
	case 505:
		return "HTTP version not supported\n";
	default:
		return "internal server error\n";
	}
}

static char *put(char *o, const char *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_size(char *o, size_t v)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	while (n > 0)
		*o++ = tmp[--n];
	return o;
}

/* Queue a complete answer.  With R_CLOSE nothing more is parsed, and the
 * connection is closed once it is sent. */
static void conn_answer(struct conn *c, int status, const char *body,
			unsigned flags)
{
	struct http *h = c->h;
	const char *line = status_line(status);
	size_t blen = strlen(body), llen = strlen(line);
	char *o, *start;

	date_refresh(h);
	/* The fixed header lines below take 130 bytes at most. */
	o = out_reserve(c, llen + h->date_len + h->ident_len + blen + 256);
	if (o == NULL)
		return;
	start = o;
	o = put(o, line, llen);
	o = put(o, h->date, h->date_len);
	o = PUT_LIT(o, "Content-Type: text/plain; charset=utf-8\r\n"
		       "Content-Length: ");
	o = put_size(o, blen);
	o = PUT_LIT(o, "\r\n");
	o = put(o, h->ident, h->ident_len);
	if (flags & R_ALLOW)
		o = PUT_LIT(o, "Allow: GET, HEAD\r\n");
	if (flags & R_CLOSE)
		o = PUT_LIT(o, "Connection: close\r\n");
	else if (flags & R_KA10)
		o = PUT_LIT(o, "Connection: keep-alive\r\n");
	o = PUT_LIT(o, "\r\n");
	if (!(flags & R_HEAD))
		o = put(o, body, blen);
	c->out_len += (size_t)(o - start);
	fpool_worker_count_requests(h->w, 1);
	if (flags & R_CLOSE)
		c->closing = true;
	if (out_pending(c) >= HTTP_OUT_HIGH)
		c->out_full = true;
}

/*
 * Whether more of the client's input is waiting: bytes after the request
 * just parsed (`more`), or in the socket.  Asked only once stopping, where
 * such a connection is kept for them and "Connection: close" goes into the
 * answer to the last one.
 */
static bool more_input(struct conn *c, bool more)
{
	int n = 0;

	if (more || in_pending(c))
		return true;
	if (c->eof)
		return false;
	if (ioctl(c->fd, FIONREAD, &n) < 0) {
		fpool_log(FPOOL_LOG_WARNING,
			  "http: ioctl(FIONREAD) on fd %d: %s", c->fd,
			  strerror(errno));
		return false;
	}
	return n > 0;
}

/* R_* flags for answering the request just parsed. */
static unsigned request_flags(struct conn *c)
{
	unsigned flags = 0;

	if (llhttp_get_method(&c->parser) == HTTP_HEAD)
		flags |= R_HEAD;
	if (!llhttp_should_keep_alive(&c->parser))
		flags |= R_CLOSE;
	else if (c->parser.http_minor == 0)
		flags |= R_KA10;
	return flags;
}

/* The R_* flags to answer a request with now, from those the request
 * asked for: once stopping, "Connection: close" unless more input waits.
 * `more`: the client's bytes after the request are at hand. */
static unsigned answer_flags(struct conn *c, unsigned flags, bool more)
{
	if (c->h->stopping && !(flags & R_CLOSE) && !more_input(c, more))
		flags = (flags & ~(unsigned)R_KA10) | R_CLOSE;
	/* Input left unparsed behind the last answer: close with a
	 * linger. */
	if (flags & R_CLOSE)
		c->linger = more || in_pending(c);
	return flags;
}

/* Answer a request that was refused (parsing cannot go on), and close. */
static void conn_refuse(struct conn *c, int status, const char *why)
{
	unsigned flags = R_CLOSE;

	fpool_log(FPOOL_LOG_DEBUG, "http: fd %d: %d for a request: %s", c->fd,
		  status, why);
	if (status == 405)
		flags |= R_ALLOW;
	conn_answer(c, status, status_body(status), flags);
	c->linger = true;
	c->phase = PH_IDLE;
}

/* ---- The activity ----------------------------------------------------- */

/* What the worker is busy with: the request at hand, else the oldest
 * /sleep in flight, else nothing. */
static void activity_idle(struct http *h)
{
	struct conn *s = h->sleepers;

	if (s == NULL)
		fpool_worker_set_activity(h->w, NULL);
	else
		fpool_worker_set_activity(
			h->w, "%s %.*s",
			llhttp_method_name(
				(llhttp_method_t)(s->sleep_flags & R_HEAD
							  ? HTTP_HEAD
							  : HTTP_GET)),
			(int)(s->url_len > 200 ? 200 : s->url_len), s->url);
}

static void sleeper_link(struct conn *c)
{
	struct http *h = c->h;

	c->sprev = NULL;
	c->snext = h->sleepers;
	if (h->sleepers != NULL)
		h->sleepers->sprev = c;
	h->sleepers = c;
}

static void sleeper_unlink(struct conn *c)
{
	if (c->sprev != NULL)
		c->sprev->snext = c->snext;
	else if (c->h->sleepers == c)
		c->h->sleepers = c->snext;
	if (c->snext != NULL)
		c->snext->sprev = c->sprev;
	c->sprev = c->snext = NULL;
}

/* ---- Requests --------------------------------------------------------- */

static int hexval(char x)
{
	if (x >= '0' && x <= '9')
		return x - '0';
	if (x >= 'a' && x <= 'f')
		return x - 'a' + 10;
	if (x >= 'A' && x <= 'F')
		return x - 'A' + 10;
	return -1;
}

/* Percent-decode s[0..n) ('+' is a space) into out (cap bytes); the
 * decoded length, or (size_t)-1 if it does not fit. */
static size_t query_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (ch == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 &&
		    hexval(s[i + 2]) >= 0) {
			ch = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (o == cap)
			return (size_t)-1;
		out[o++] = ch;
	}
	return o;
}

/* 0..HTTP_SLEEP_MAX from 1 to 5 digits, or -1. */
static long digits_value(const char *s, size_t n)
{
	long v = 0;

	if (n < 1 || n > 5)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= HTTP_SLEEP_MAX ? v : -1;
}

/*
 * The N of "ms=N" in a query (0 <= N <= HTTP_SLEEP_MAX, digits only), or
 * -1.  As evhttp_parse_query_str() took it before: every '&'-separated
 * pair must have a '=' and a name, values are percent-decoded, and the
 * first "ms" counts.
 */
static long sleep_ms(const char *q, size_t n)
{
	long ms = -1;
	bool found = false;
	size_t i = 0;

	while (i <= n) {
		size_t end = i, eq;
		char key[8], val[8];
		size_t klen, vlen;

		while (end < n && q[end] != '&')
			end++;
		for (eq = i; eq < end && q[eq] != '='; eq++)
			;
		if (eq == end || eq == i)
			return -1; /* no '=', or no name */
		if (!found) {
			klen = query_decode(q + i, eq - i, key, sizeof(key));
			if (klen == 2 && memcmp(key, "ms", 2) == 0) {
				found = true;
				vlen = query_decode(q + eq + 1, end - eq - 1,
						    val, sizeof(val));
				ms = digits_value(val, vlen);
			}
		}
		i = end + 1;
	}
	return ms;
}

static void sleep_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct http *h = c->h;
	unsigned flags = c->sleep_flags;
	char body[64];

	(void)fd;
	(void)what;
	h->now = mono_now();
	sleeper_unlink(c);
	c->phase = PH_IDLE;
	c->idle_since = h->now;
	snprintf(body, sizeof(body), "slept %lu ms\n", c->sleep_ms);
	conn_answer(c, 200, body, answer_flags(c, flags, false));
	activity_idle(h);
	conn_run(c);
}

/* Answer the request the parser just completed.  `more`: the client's
 * bytes after it are at hand. */
static void conn_dispatch(struct conn *c, bool more)
{
	struct http *h = c->h;
	uint8_t method = llhttp_get_method(&c->parser);
	unsigned asked = request_flags(c), flags;
	const char *u = c->url, *path, *q = NULL;
	size_t n = c->url_len, plen, qlen = 0;
	long ms;

	c->nreq++;
	c->phase = PH_IDLE;
	c->idle_since = h->now;
	fpool_worker_set_activity(h->w, "%s %.*s",
				  llhttp_method_name((llhttp_method_t)method),
				  (int)(n > 200 ? 200 : n), u);
	/* The path: origin-form, or absolute-form (RFC 9112 3.2.2) with its
	 * scheme and authority skipped, as evhttp_uri_get_path() did. */
	path = u;
	if (n >= 7 && strncasecmp(u, "http://", 7) == 0)
		path = u + 7;
	else if (n >= 8 && strncasecmp(u, "https://", 8) == 0)
		path = u + 8;
	if (path != u) {
		while (path < u + n && *path != '/' && *path != '?' &&
		       *path != '#')
			path++;
	}
	plen = 0;
	while (path + plen < u + n && path[plen] != '?' && path[plen] != '#')
		plen++;
	if (path + plen < u + n && path[plen] == '?') {
		q = path + plen + 1;
		while (q + qlen < u + n && q[qlen] != '#')
			qlen++;
	}

	if (plen == 6 && memcmp(path, "/sleep", 6) == 0 &&
	    (method == HTTP_GET || method == HTTP_HEAD) &&
	    (ms = q != NULL ? sleep_ms(q, qlen) : -1) >= 0) {
		struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

		if (evtimer_add(c->sleep_ev, &tv) == 0) {
			/* The answer waits for the timer; c->url stays, as
			 * nothing is parsed meanwhile. */
			c->sleep_ms = (unsigned long)ms;
			c->sleep_flags = asked;
			c->phase = PH_BUSY;
			sleeper_link(c);
			return;
		}
		fpool_log(FPOOL_LOG_ERROR, "http: cannot arm a /sleep timer");
		conn_answer(c, 500, status_body(500),
			    answer_flags(c, asked, more));
		activity_idle(h);
		return;
	}
	flags = answer_flags(c, asked, more);
	if (method != HTTP_GET && method != HTTP_HEAD) {
		conn_answer(c, 405, status_body(405), flags | R_ALLOW);
	} else if (plen == 1 && path[0] == '/') {
		conn_answer(c, 200, h->hello, flags);
	} else if (plen == 6 && memcmp(path, "/sleep", 6) == 0) {
		conn_answer(c, 400, "ms must be an integer from 0 to 60000\n",
			    flags);
	} else {
		conn_answer(c, 404, status_body(404), flags);
	}
	activity_idle(h);
}

/* ---- Parser callbacks --------------------------------------------------- */

static struct conn *parser_conn(llhttp_t *p)
{
	return p->data;
}

/* Request line and header bytes so far, up to `end` in the bytes given
 * to llhttp_execute. */
static size_t header_bytes(const struct conn *c, const char *end)
{
	return c->hdr_carry + (size_t)(end - c->hdr_base);
}

/* A header span up to at + len: refuse past the header limit. */
static int header_check(struct conn *c, const char *at, size_t len)
{
	if (header_bytes(c, at + len) > HTTP_MAX_HEADERS) {
		c->err_status = 431;
		return -1;
	}
	return 0;
}

/* Bytes after the headers (body, chunk extensions, trailers). */
static int body_count(struct conn *c, size_t len)
{
	c->body_bytes += len;
	if (c->body_bytes > HTTP_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	return 0;
}

static int on_message_begin(llhttp_t *p)
{
	struct conn *c = parser_conn(p);

	c->phase = PH_HEADERS;
	/* The first request's headers are due from the accept; the next
	 * ones from their first byte. */
	if (c->nreq > 0)
		c->req_start = c->h->now;
	c->hdr_carry = 0;
	c->hdr_base = c->exec_start;
	c->url_len = 0;
	c->body_bytes = 0;
	c->field_len = 0;
	c->field_long = false;
	c->in_expect = false;
	c->expect_continue = c->expect_other = false;
	c->err_status = 0;
	return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = parser_conn(p);

	if (header_check(c, at, len) != 0)
		return -1;
	if (c->url_len + len > c->url_cap) {
		/* Past the inline buffer: one of the header limit, kept. */
		char *big = malloc(HTTP_MAX_HEADERS);

		if (big == NULL) {
			c->err_status = 500;
			return -1;
		}
		memcpy(big, c->url, c->url_len);
		c->url = big;
		c->url_cap = HTTP_MAX_HEADERS;
	}
	memcpy(c->url + c->url_len, at, len);
	c->url_len += len;
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = parser_conn(p);

	if (c->phase != PH_HEADERS) /* a trailer */
		return body_count(c, len);
	if (header_check(c, at, len) != 0)
		return -1;
	if (c->field_len + len > sizeof(c->field)) {
		c->field_long = true;
	} else {
		memcpy(c->field + c->field_len, at, len);
		c->field_len += len;
	}
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct conn *c = parser_conn(p);

	c->in_expect = c->phase == PH_HEADERS && !c->field_long &&
		       c->field_len == 6 &&
		       strncasecmp(c->field, "expect", 6) == 0;
	c->field_len = 0;
	c->field_long = false;
	c->expect_len = 0;
	c->expect_long = false;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = parser_conn(p);

	if (c->phase != PH_HEADERS)
		return body_count(c, len);
	if (header_check(c, at, len) != 0)
		return -1;
	if (c->in_expect) {
		if (c->expect_long || c->expect_len + len > sizeof(c->expect)) {
			c->expect_long = true;
		} else {
			memcpy(c->expect + c->expect_len, at, len);
			c->expect_len += len;
		}
	}
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct conn *c = parser_conn(p);
	size_t n = c->expect_len;

	if (!c->in_expect)
		return 0;
	c->in_expect = false;
	if (c->expect_long) {
		c->expect_other = true;
		return 0;
	}
	while (n > 0 && (c->expect[n - 1] == ' ' || c->expect[n - 1] == '\t'))
		n--;
	if (n == 12 && strncasecmp(c->expect, "100-continue", 12) == 0)
		c->expect_continue = true;
	else
		c->expect_other = true;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct conn *c = parser_conn(p);
	bool body = (p->flags & F_CHUNKED) || p->content_length > 0;

	if (p->http_major != 1) {
		c->err_status = 505;
		return -1;
	}
	if (p->method == HTTP_CONNECT) {
		/* Whatever follows is not HTTP: nothing to parse on. */
		c->err_status = 405;
		return -1;
	}
	/* We never switch protocols: an Upgrade is an ordinary request,
	 * and what follows it more requests. */
	p->upgrade = 0;
	if ((p->flags & F_CONTENT_LENGTH) &&
	    p->content_length > HTTP_MAX_BODY) {
		c->err_status = 413;
		return -1;
	}
	/* RFC 9110 10.1.1: a server may answer 417 to an expectation it
	 * cannot meet, and must ignore 100-continue from HTTP/1.0. */
	if (p->http_minor >= 1 && c->expect_other) {
		c->err_status = 417;
		return -1;
	}
	if (body) {
		if (p->http_minor >= 1 && c->expect_continue) {
			/* Before the body: answers before it are queued
			 * already, in order. */
			static const char cont[] =
				"HTTP/1.1 100 Continue\r\n\r\n";
			char *o = out_reserve(c, sizeof(cont) - 1);

			if (o == NULL) {
				c->err_status = 500;
				return -1;
			}
			memcpy(o, cont, sizeof(cont) - 1);
			c->out_len += sizeof(cont) - 1;
		}
		c->phase = PH_BODY;
		c->body_start = c->h->now;
	}
	return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
	(void)at;
	return body_count(parser_conn(p), len);
}

static int on_chunk_extension_name(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = parser_conn(p);

	(void)at;
	c->ext_value = false;
	return body_count(c, len);
}

/*
 * llhttp 8.1.0 (Debian 12's node-llhttp) takes the ';' that ends an
 * unquoted chunk extension value and then wants another ';' or the CRLF,
 * so "5;a=b;c=d" is refused, though RFC 9112 7.1.1 allows it.  When
 * probe_llhttp() found this parser to have that bug, the value callback
 * pauses the parser on such a ';' (at[len]), and conn_feed() resumes with
 * that ';' given again, where the parser expects it.
 */
static int ext_value_pause(bool *quoted, bool *seen, const char *at, size_t len,
			   const char *end)
{
	if (!*seen) {
		*seen = true;
		*quoted = len > 0 && at[0] == '"';
	}
	if (fix_ext_semicolon && !*quoted && at + len < end && at[len] == ';')
		return HPE_PAUSED;
	return 0;
}

static int on_chunk_extension_value(llhttp_t *p, const char *at, size_t len)
{
	struct conn *c = parser_conn(p);
	int r;

	if (body_count(c, len) != 0)
		return -1;
	r = ext_value_pause(&c->ext_quoted, &c->ext_value, at, len,
			    c->exec_end);
	if (r == HPE_PAUSED)
		c->reparse = true;
	return r;
}

static int on_chunk_extension_value_complete(llhttp_t *p)
{
	parser_conn(p)->ext_value = false;
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	(void)p;
	/* Answer it outside the parser, where we know where it ended. */
	return HPE_PAUSED;
}

/* Whether more requests may be parsed now. */
static bool can_parse(const struct conn *c)
{
	return !c->closing && !c->broken && !c->out_full &&
	       c->phase != PH_BUSY && c->phase != PH_LINGER;
}

/*
 * Parse and answer the requests in data[0..len); stops early when parsing
 * must wait (a /sleep, answers piling up) or ends (an answer that
 * closes).  Returns the bytes consumed: the rest is the caller's to keep
 * (or drop, once closing).
 */
static size_t conn_feed(struct conn *c, const char *data, size_t len)
{
	const char *p = data, *end = data + len;

	while (p < end && can_parse(c)) {
		llhttp_errno_t err;
		const char *pos;

		if (c->phase == PH_HEADERS && c->hdr_base == NULL)
			c->hdr_base = p;
		c->exec_start = p;
		c->exec_end = end;
		err = llhttp_execute(&c->parser, p, (size_t)(end - p));
		if (err == HPE_OK) {
			if (c->phase == PH_HEADERS) {
				c->hdr_carry = header_bytes(c, end);
				c->hdr_base = NULL;
				if (c->hdr_carry > HTTP_MAX_HEADERS)
					conn_refuse(c, 431,
						    "headers too large");
			}
			return len;
		}
		pos = llhttp_get_error_pos(&c->parser);
		if (err == HPE_PAUSED) {
			llhttp_resume(&c->parser);
			if (c->reparse) {
				c->reparse = false;
				p = pos - 1;
				continue;
			}
			p = pos;
			conn_dispatch(c, p < end);
			continue;
		}
		if (c->err_status != 0)
			conn_refuse(c, c->err_status, llhttp_errno_name(err));
		else
			conn_refuse(c, 400,
				    llhttp_get_error_reason(&c->parser));
		return len;
	}
	return (size_t)(p - data);
}

/* ---- Connections ------------------------------------------------------ */

static void conn_free(struct conn *c)
{
	struct http *h = c->h;

	event_del(c->rev);
	event_del(c->wev);
	event_del(c->timer);
	event_del(c->sleep_ev);
	sleeper_unlink(c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->fd >= 0 && close(c->fd) < 0)
		fpool_log(FPOOL_LOG_WARNING, "http: close of fd %d: %s", c->fd,
			  strerror(errno));
	if (c->url != c->url_inline)
		free(c->url);
	free(c->in);
	free(c->out);
	free(c);
}

/* Close after a failed syscall: a peer going away is expected. */
static void conn_fail(struct conn *c, const char *what, int err)
{
	if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT ||
	    err == ENOTCONN)
		fpool_log(FPOOL_LOG_DEBUG, "http: %s on fd %d: %s", what, c->fd,
			  strerror(err));
	else
		fpool_log(FPOOL_LOG_WARNING,
			  "http: %s on fd %d: %s; closing it", what, c->fd,
			  strerror(err));
	conn_free(c);
}

/* What a deadline passing means. */
enum deadline_kind {
	DL_CLOSE, /* close: idle, stop grace, linger */
	DL_408,	  /* a request not received in time: 408, then close */
	DL_SEND,  /* a peer that took none of its answers: close */
};

/* The deadline in force (monotonic seconds; 0: none) and its kind. */
static double conn_deadline(const struct conn *c, enum deadline_kind *kind)
{
	const struct http *h = c->h;
	double d = 0;

	*kind = DL_CLOSE;
	switch (c->phase) {
	case PH_IDLE:
		if (c->closing)
			break; /* the write deadline bounds it */
		if (c->nreq == 0) {
			d = c->req_start + h->header_timeout;
		} else {
			d = c->idle_since + h->idle_timeout;
			if (out_pending(c) > 0)
				d = 0; /* not idle until the answers are out */
		}
		if (h->stopping && out_pending(c) == 0) {
			double since =
				c->nreq == 0 ? c->req_start : c->idle_since;
			double g = (since > h->stop_at ? since : h->stop_at) +
				   HTTP_STOP_GRACE;

			if (d == 0 || g < d)
				d = g;
		}
		break;
	case PH_HEADERS:
		d = c->req_start + h->header_timeout;
		*kind = DL_408;
		break;
	case PH_BODY:
		d = c->body_start + h->header_timeout;
		*kind = DL_408;
		break;
	case PH_BUSY:
		break;
	case PH_LINGER:
		d = c->linger_at + HTTP_LINGER;
		break;
	}
	/* A peer that takes none of its answers for the idle timeout. */
	if (c->writing) {
		double wd = c->send_since + h->idle_timeout;

		if (d == 0 || wd < d) {
			d = wd;
			*kind = DL_SEND;
		}
	}
	return d;
}

/* Arm the connection's timer for its deadline.  Lazily: a later deadline
 * leaves the timer as it is (it fires early, and is armed again then), so
 * that a busy kept-alive connection does not move it at every request. */
static void conn_arm(struct conn *c)
{
	enum deadline_kind kind;
	double d = conn_deadline(c, &kind), left;
	struct timeval tv;

	if (d == 0 || (c->timer_on && c->timer_at <= d))
		return;
	left = d - c->h->now;
	if (left < 0)
		left = 0;
	tv.tv_sec = (time_t)left;
	tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec) * 1e6);
	if (evtimer_add(c->timer, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "http: cannot arm the timer of fd %d; closing it",
			  c->fd);
		c->broken = true;
		return;
	}
	c->timer_on = true;
	c->timer_at = d;
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct http *h = c->h;
	enum deadline_kind kind;
	double d;

	(void)fd;
	(void)what;
	h->now = mono_now();
	c->timer_on = false;
	buffers_trim(c);
	d = conn_deadline(c, &kind);
	if (d == 0 || d > h->now + HTTP_SLACK) {
		conn_run(c); /* not yet: arm it again */
		return;
	}
	if (kind == DL_SEND) {
		fpool_log(FPOOL_LOG_DEBUG,
			  "http: fd %d took none of its answers for %g s; "
			  "closing it",
			  c->fd, h->idle_timeout);
		conn_free(c);
		return;
	}
	if (kind == DL_408 && !c->closing) {
		/* Nothing of this request's answer is out yet. */
		conn_refuse(c, 408, "request not received in time");
		conn_run(c);
		return;
	}
	conn_free(c);
}

/* Send what is queued.  0, or -1 if the connection was closed. */
static int conn_send(struct conn *c)
{
	bool progress = false;

	while (out_pending(c) > 0) {
		ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c),
				 MSG_NOSIGNAL);

		if (n > 0) {
			c->out_off += (size_t)n;
			progress = true;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_fail(c, "send", n < 0 ? errno : EPIPE);
		return -1;
	}
	if (out_pending(c) == 0) {
		if (c->writing) {
			event_del(c->wev);
			c->writing = false;
		}
		c->out_full = false;
		/* Waiting for the next request starts now. */
		c->idle_since = c->h->now;
		return 0;
	}
	if (out_pending(c) <= HTTP_OUT_LOW)
		c->out_full = false;
	if (!c->writing) {
		if (event_add(c->wev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot watch fd %d for writing; "
				  "closing it",
				  c->fd);
			conn_free(c);
			return -1;
		}
		c->writing = true;
		c->send_since = c->h->now;
	} else if (progress) {
		c->send_since = c->h->now;
	}
	return 0;
}

/*
 * Bring the connection up to date after anything happened: parse what
 * waits, send, then close or watch what is due next.  The connection may
 * be freed.
 */
static void conn_run(struct conn *c)
{
	bool want_read;

	for (;;) {
		if (in_pending(c) && can_parse(c)) {
			size_t off = c->in_off, n;

			/* Taken out of the buffer while parsed, so that
			 * more_input() sees only what follows a request. */
			c->in_off = c->in_len;
			n = conn_feed(c, c->in + off, c->in_len - off);
			if (!c->closing) /* else never parsed */
				c->in_off = off + n;
		}
		if (c->broken) {
			conn_free(c);
			return;
		}
		if (out_pending(c) > 0 && conn_send(c) != 0)
			return;
		if (!(in_pending(c) && can_parse(c)))
			break;
	}
	if (out_pending(c) == 0)
		c->out_off = c->out_len = 0;
	if (!in_pending(c))
		c->in_off = c->in_len = 0;
	if (c->closing && out_pending(c) == 0 && c->phase != PH_LINGER &&
	    c->phase != PH_BUSY) {
		/* The last answer is out.  With input left unread, shut our
		 * side and drop what comes until the client closes: a close
		 * now would reset the connection, and could destroy the
		 * answer before the client read it. */
		if (!c->linger || c->eof) {
			conn_free(c);
			return;
		}
		if (shutdown(c->fd, SHUT_WR) != 0) {
			conn_fail(c, "shutdown", errno);
			return;
		}
		c->phase = PH_LINGER;
		c->linger_at = c->h->now;
	}
	if (c->eof && out_pending(c) == 0 && c->phase != PH_BUSY) {
		/* The client is done sending, and everything it sent that
		 * could be answered is answered. */
		conn_free(c);
		return;
	}
	want_read = c->phase == PH_LINGER ||
		    (can_parse(c) && !c->eof && !in_pending(c));
	if (want_read != c->reading) {
		if (want_read ? event_add(c->rev, NULL) : event_del(c->rev)) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot watch fd %d for reading; "
				  "closing it",
				  c->fd);
			conn_free(c);
			return;
		}
		c->reading = want_read;
	}
	conn_arm(c);
	if (c->broken)
		conn_free(c);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct http *h = c->h;
	ssize_t n;
	size_t used;

	(void)what;
	n = recv(fd, h->rbuf, HTTP_READ_SIZE, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_fail(c, "recv", errno);
		return;
	}
	h->now = mono_now();
	if (n == 0) {
		if (c->phase == PH_HEADERS || c->phase == PH_BODY ||
		    c->phase == PH_LINGER) {
			/* Gone before its request was complete, or done
			 * after our last answer. */
			conn_free(c);
			return;
		}
		c->eof = true;
		conn_run(c);
		return;
	}
	if (c->phase == PH_LINGER) {
		conn_run(c);
		return; /* dropped */
	}
	used = conn_feed(c, h->rbuf, (size_t)n);
	if (used < (size_t)n && !c->closing)
		in_keep(c, h->rbuf + used, (size_t)n - used);
	conn_run(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	c->h->now = mono_now();
	conn_run(c);
}

static void accept_cb(struct fpool_acceptor *a, int fd,
		      const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct http *h = arg;
	size_t es = h->event_size;
	struct conn *c = calloc(1, sizeof(*c) + 4 * es + 16);
	char *ev;
	int one = 1;

	(void)a;
	(void)salen;
	if (c == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory for a "
					   "connection; closing it");
		close(fd);
		return;
	}
	/* The four events, aligned, after the struct. */
	ev = (char *)(((uintptr_t)(c + 1) + 15) & ~(uintptr_t)15);
	c->rev = (struct event *)ev;
	c->wev = (struct event *)(ev + es);
	c->timer = (struct event *)(ev + 2 * es);
	c->sleep_ev = (struct event *)(ev + 3 * es);
	c->h = h;
	c->fd = fd;
	c->url = c->url_inline;
	c->url_cap = sizeof(c->url_inline);
	h->now = mono_now();
	c->req_start = h->now;
	c->idle_since = h->now;
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	if (event_assign(c->rev, h->base, fd, EV_READ | EV_PERSIST,
			 conn_read_cb, c) != 0 ||
	    event_assign(c->wev, h->base, fd, EV_WRITE | EV_PERSIST,
			 conn_write_cb, c) != 0 ||
	    event_assign(c->timer, h->base, -1, 0, conn_timer_cb, c) != 0 ||
	    event_assign(c->sleep_ev, h->base, -1, 0, sleep_done_cb, c) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot set up the events of "
					   "a connection; closing it");
		close(fd);
		free(c);
		return;
	}
	/* Answers go out in one send each; do not let Nagle hold back one
	 * that follows another not acknowledged yet (100 Continue, then the
	 * answer). */
	if ((sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		fpool_log(FPOOL_LOG_WARNING, "http: TCP_NODELAY on fd %d: %s",
			  fd, strerror(errno));
	c->next = h->conns;
	if (h->conns != NULL)
		h->conns->prev = c;
	h->conns = c;
	conn_run(c);
}

/* ---- Probing llhttp --------------------------------------------------- */

static struct {
	bool quoted, seen, reparse;
	const char *end;
	int messages;
} probe;

static int probe_ext_value(llhttp_t *p, const char *at, size_t len)
{
	int r = ext_value_pause(&probe.quoted, &probe.seen, at, len, probe.end);

	(void)p;
	if (r == HPE_PAUSED)
		probe.reparse = true;
	return r;
}

static int probe_ext_name(llhttp_t *p, const char *at, size_t len)
{
	(void)p;
	(void)at;
	(void)len;
	probe.seen = false;
	return 0;
}

static int probe_message_complete(llhttp_t *p)
{
	(void)p;
	probe.messages++;
	return 0;
}

/* Parse a chunked request with two extensions, the first with a token
 * value; true if it parses. */
static bool probe_parse(void)
{
	static const char req[] = "POST / HTTP/1.1\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n"
				  "1;a=b;c=d\r\nx\r\n0\r\n\r\n";
	llhttp_settings_t s;
	llhttp_t p;
	const char *at = req, *end = req + sizeof(req) - 1;

	llhttp_settings_init(&s);
	s.on_chunk_extension_name = probe_ext_name;
	s.on_chunk_extension_value = probe_ext_value;
	s.on_message_complete = probe_message_complete;
	llhttp_init(&p, HTTP_REQUEST, &s);
	probe.messages = 0;
	probe.end = end;
	for (int i = 0; i < 8 && at < end; i++) {
		llhttp_errno_t err = llhttp_execute(&p, at, (size_t)(end - at));

		if (err == HPE_OK)
			break;
		if (err != HPE_PAUSED || !probe.reparse)
			return false;
		probe.reparse = false;
		llhttp_resume(&p);
		at = llhttp_get_error_pos(&p) - 1;
	}
	return probe.messages == 1;
}

/* Find out whether this llhttp has the chunk extension bug (see
 * ext_value_pause), so that a fixed llhttp is used as it is. */
static void probe_llhttp(void)
{
	fix_ext_semicolon = false;
	if (probe_parse())
		return;
	fix_ext_semicolon = true;
	if (probe_parse())
		return;
	fix_ext_semicolon = false;
	fpool_log(FPOOL_LOG_WARNING,
		  "http: llhttp %d.%d.%d refuses chunk extensions after a "
		  "token value (\"1;a=b;c=d\"); such requests get 400",
		  LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
		  LLHTTP_VERSION_PATCH);
}

/* The parser callbacks, and whether llhttp needs the chunk extension
 * fix. */
static void parser_setup(void)
{
	llhttp_settings_init(&parser_settings);
	parser_settings.on_message_begin = on_message_begin;
	parser_settings.on_url = on_url;
	parser_settings.on_header_field = on_header_field;
	parser_settings.on_header_field_complete = on_header_field_complete;
	parser_settings.on_header_value = on_header_value;
	parser_settings.on_header_value_complete = on_header_value_complete;
	parser_settings.on_headers_complete = on_headers_complete;
	parser_settings.on_body = on_body;
	parser_settings.on_chunk_extension_name = on_chunk_extension_name;
	parser_settings.on_chunk_extension_value = on_chunk_extension_value;
	parser_settings.on_chunk_extension_value_complete =
		on_chunk_extension_value_complete;
	parser_settings.on_message_complete = on_message_complete;
	probe_llhttp();
}

/* ---- The worker ------------------------------------------------------- */

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value (NULL if this is
 * not --name), advancing *i past it; *missing if the value is absent. */
static const char *flag_value(int argc, char **argv, int *i, const char *name,
			      bool *missing)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc) {
		*missing = true;
		return NULL;
	}
	return argv[++*i];
}

static int http_setup(struct fpool_worker *w, int argc, char **argv)
{
	(void)w;
	opt_header_timeout = HTTP_HEADER_TIMEOUT;
	opt_idle_timeout = HTTP_IDLE_TIMEOUT;
	for (int i = 1; i < argc; i++) {
		static const char *const names[] = { "--header-timeout",
						     "--idle-timeout" };
		double *dest[] = { &opt_header_timeout, &opt_idle_timeout };
		bool known = false;

		for (size_t k = 0; k < 2 && !known; k++) {
			bool missing = false;
			const char *v =
				flag_value(argc, argv, &i, names[k], &missing);
			int r;

			if (missing) {
				fpool_log(FPOOL_LOG_ERROR,
					  "http: %s: missing value (seconds, "
					  "e.g. 10 or 500ms)",
					  names[k]);
				return -EINVAL;
			}
			if (v == NULL)
				continue;
			known = true;
			r = fpool_duration_parse(v, dest[k]);
			if (r != 0) {
				fpool_log(FPOOL_LOG_ERROR,
					  "http: %s: '%s' is not a duration "
					  "(more than 0, at most a week: "
					  "10, 2.5, 500ms, 2s, 1.5m): %s",
					  names[k], v, fpool_strerror(r));
				return -EINVAL;
			}
		}
		if (!known) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: unknown worker argument '%s' (the "
				  "http worker takes --header-timeout SEC "
				  "and --idle-timeout SEC)",
				  argv[i]);
			return -EINVAL;
		}
	}
	return 0;
}

static void http_close_all(struct http *h)
{
	for (size_t i = 0; i < h->nacceptors; i++)
		fpool_acceptor_free(h->acceptors[i]);
	h->nacceptors = 0;
	while (h->conns != NULL)
		conn_free(h->conns);
}

static int http_on_start(struct fpool_worker *w, void *arg)
{
	struct http *h = calloc(1, sizeof(*h));
	size_t n;
	const int *fds = fpool_worker_listeners(w, &n);

	(void)arg;
	if (h == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory");
		return -ENOMEM;
	}
	h->w = w;
	h->base = fpool_worker_base(w);
	fpool_worker_set_data(w, h);
	h->header_timeout = opt_header_timeout;
	h->idle_timeout = opt_idle_timeout;
	h->event_size = (event_get_struct_event_size() + 15) & ~(size_t)15;
	h->ident_len = (size_t)snprintf(
		h->ident, sizeof(h->ident), "X-Pid: %d\r\nX-Worker: %u\r\n",
		(int)fpool_worker_pid(w), fpool_worker_id(w));
	h->hello_len = (size_t)snprintf(
		h->hello, sizeof(h->hello), "hello from worker %u pid %d\n",
		fpool_worker_id(w), (int)fpool_worker_pid(w));
	h->rbuf = malloc(HTTP_READ_SIZE);
	h->acceptors = calloc(n ? n : 1, sizeof(*h->acceptors));
	if (h->rbuf == NULL || h->acceptors == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory");
		return -ENOMEM;
	}

	parser_setup();
	for (size_t i = 0; i < n; i++) {
		int r = fpool_acceptor_new(&h->acceptors[h->nacceptors],
					   h->base, fds[i], FPOOL_ACCEPT_CLOSE,
					   accept_cb, h);

		if (r != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot accept on fd %d: %s", fds[i],
				  fpool_strerror(r));
			return -EIO;
		}
		h->nacceptors++;
	}
	fpool_log(FPOOL_LOG_DEBUG,
		  "http: header timeout %g s, idle timeout %g s, llhttp "
		  "%d.%d.%d%s",
		  h->header_timeout, h->idle_timeout, LLHTTP_VERSION_MAJOR,
		  LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH,
		  fix_ext_semicolon ? " (with the chunk extension fix)" : "");
	return 0;
}

static int http_on_stop(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);

	(void)arg;
	if (h == NULL)
		return 0;
	h->stopping = true;
	h->now = mono_now();
	h->stop_at = h->now;
	/* Closes this worker's copies of the listeners only: the master and
	 * the other workers keep theirs. */
	for (size_t i = 0; i < h->nacceptors; i++)
		fpool_acceptor_free(h->acceptors[i]);
	h->nacceptors = 0;
	/* A connection waiting for a request now has the stop grace. */
	for (struct conn *c = h->conns, *next; c != NULL; c = next) {
		next = c->next;
		conn_arm(c);
		if (c->broken)
			conn_free(c);
	}
	return 0;
}

static int http_main(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);
	int r;

	(void)arg;
	r = fpool_worker_loop(w);
	if (r != 0)
		fpool_log(FPOOL_LOG_ERROR, "http: the loop failed: %s",
			  fpool_strerror(r));
	/* After an interrupt (or a loop failure) connections may remain;
	 * after a graceful stop there are none left. */
	http_close_all(h);
	return r == 0 ? 0 : 1;
}

static int http_on_shutdown(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);

	(void)arg;
	if (h != NULL) {
		http_close_all(h); /* main may not have run */
		free(h->acceptors);
		free(h->rbuf);
		free(h);
	}
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_http_worker = {
	.name = "http",
	.description = "HTTP/1.1 (GET /, GET /sleep?ms=N) on every listener",
	.setup = http_setup,
	.on_start = http_on_start,
	.on_stop = http_on_stop,
	.on_shutdown = http_on_shutdown,
	.main = http_main,
};
