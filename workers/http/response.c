/*
 * The http worker's answers: status lines, header lines (the Date line
 * made once per second), the output buffer they go into, and whether an
 * answer keeps the connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "http-int.h"

/* ---- The Date line ---------------------------------------------------- */

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

/* ---- The output buffer ------------------------------------------------ */

/* Room for `need` more bytes at the end of c->out; NULL when out of
 * memory (then the connection is marked broken). */
char *out_reserve(struct conn *c, size_t need)
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

const char *status_body(int status)
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
void conn_answer(struct conn *c, int status, const char *body, unsigned flags)
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
unsigned request_flags(struct conn *c)
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
unsigned answer_flags(struct conn *c, unsigned flags, bool more)
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
void conn_refuse(struct conn *c, int status, const char *why)
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
