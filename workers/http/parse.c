/*
 * The http worker's request parsing on llhttp: the parser callbacks, the
 * header and body limits, the pause at the end of each request, and the
 * chunk extension fix for the llhttp versions that need it.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http-int.h"

/* Whether this llhttp needs the chunk extension fix (see probe_llhttp). */
bool fix_ext_semicolon;

/* Every connection's parser calls these (parser_setup() fills them). */
llhttp_settings_t parser_settings;

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
bool can_parse(const struct conn *c)
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
size_t conn_feed(struct conn *c, const char *data, size_t len)
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
void parser_setup(void)
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
