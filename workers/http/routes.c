/*
 * What the http worker answers: GET / and GET /sleep?ms=N (a timer per
 * request), 404 and 405 for the rest; and the activity it reports.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http-int.h"

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

void sleeper_unlink(struct conn *c)
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

void sleep_done_cb(evutil_socket_t fd, short what, void *arg)
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
void conn_dispatch(struct conn *c, bool more)
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
