/*
 * Logging.  A record is a time, a level, an origin (the master, or worker
 * ID with its pid), a message and key/value fields; a captured line of a
 * worker's stdout/stderr is a record with a stream.
 *
 * In the master, records go to the sink: stderr or --log-file, as text
 *
 *     2026-11-21T23:40:01.123456Z info worker 2 pid 4711: msg key=value
 *
 * or as one JSON object per line (yajl).  Each record is formatted into
 * one buffer and written with one write(2), so lines never interleave.
 * The time has microseconds so that respawn latency can be read off it.
 *
 * In a worker, fpool_log() sends the record to the master over the
 * channel, blocking when the master is busy (backpressure: nothing is
 * lost), and the master writes it through its sink.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <yajl/yajl_gen.h>

#include "fpool-int.h"

/* Longest message of one record; the rest is cut. */
#define LOG_MSG_MAX 16384

static struct {
	enum fpool_log_level level;
	enum fpool_log_format format;
	struct fpool__sink *out; /* stderr or --log-file; NULL: not yet */
	struct event_base *base; /* the master's loop, while attached */
	int chan;		 /* in a worker: the channel to the master */
	int worker;		 /* in a worker: its slot id, else -1 */
	struct fpool__sink *dirty[4]; /* sinks with records not yet written */
	size_t ndirty;
} sink = {
	.level = FPOOL_LOG_INFO,
	.format = FPOOL_LOG_TEXT,
	.chan = -1,
	.worker = -1,
};

/*
 * Records forwarded from workers and captured lines are batched: the
 * master formats a burst of them into its sinks' queues and writes each
 * queue with one write(2) when the callback that read them ends
 * (fpool__log_flush).  Whole lines only, so nothing interleaves; the
 * master's own records are written at once, after what was batched
 * before them.  sink.c makes sure none of it blocks the master.
 */
/* Past this much queued, write before adding more. */
#define BATCH_MAX (256 * 1024)

/* The log's sink, made for stderr the first time one is needed; NULL
 * only when out of memory. */
static struct fpool__sink *log_sink(void)
{
	if (sink.out == NULL &&
	    fpool__sink_new(&sink.out, NULL, STDERR_FILENO, "stderr") == 0 &&
	    sink.base != NULL && fpool__sink_attach(sink.out, sink.base) != 0)
		fpool__log_errno(FPOOL_LOG_WARNING, ENOMEM,
				 "the log writes synchronously");
	return sink.out;
}

void fpool_log_set_level(enum fpool_log_level level)
{
	sink.level = level;
}

int fpool__log_format_parse(const char *s, enum fpool_log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = FPOOL_LOG_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = FPOOL_LOG_JSON;
	else
		return -EINVAL;
	return 0;
}

int fpool__open_append(const char *path)
{
	return fpool__nbfd_open_path(path);
}

int fpool_log_open(const char *path, enum fpool_log_format format)
{
	struct fpool__sink *out;
	int err;

	err = fpool__sink_new(&out, path, STDERR_FILENO,
			      path ? "the log file" : "stderr");
	if (err != 0)
		return err;
	if (sink.base != NULL && (err = fpool__sink_attach(out, sink.base))) {
		fpool__sink_free(out);
		return err;
	}
	if (sink.out != NULL) {
		/* What waits for the old log goes to the new one: nothing
		 * is lost, and nothing waits here for a slow reader. */
		fpool__sink_take(out, sink.out);
		fpool__sink_free(sink.out);
	}
	sink.ndirty = 0;
	sink.out = out;
	sink.format = format;
	return 0;
}

int fpool_log_reopen(void)
{
	return sink.out != NULL ? fpool__sink_reopen(sink.out) : 0;
}

/* A sink gives up on its reader: say so in the log. */
static void sink_notice(const char *msg)
{
	fpool_log(FPOOL_LOG_WARNING, "%s", msg);
}

void fpool__log_attach(struct event_base *base)
{
	struct fpool__sink *out = log_sink();

	fpool__sink_set_format(fpool__record_format, sink_notice);
	sink.base = base;
	if (out != NULL && fpool__sink_attach(out, base) != 0)
		fpool__log_errno(FPOOL_LOG_WARNING, ENOMEM,
				 "the log writes synchronously");
}

void fpool__log_detach(void)
{
	fpool__log_flush();
	sink.base = NULL;
	fpool__sink_detach(sink.out);
}

void fpool__log_child(void)
{
	/* The master's queued records are the master's to write, and its
	 * log file is not the worker's: the fd is closed with the other
	 * inherited ones, and its number may then be reused.  A worker's
	 * own record that cannot go over the channel goes to its stderr,
	 * which the master captures. */
	sink.ndirty = 0;
	sink.base = NULL;
	fpool__sink_on_pressure(NULL, NULL);
	fpool__sink_forget(sink.out);
	fpool__sink_free(sink.out);
	sink.out = NULL;
}

void fpool__log_refresh(void)
{
	if (sink.out != NULL)
		fpool__sink_refresh(sink.out);
}

void fpool__log_close(void)
{
	fpool__log_detach();
	fpool__sink_free(sink.out);
	sink.out = NULL;
}

void fpool__log_set_worker(int chan, unsigned id)
{
	sink.chan = chan;
	sink.worker = (int)id;
}

int fpool__write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			/* A non-blocking fd we were given: wait. */
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
				return -errno;
			continue;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Append "2026-11-21T23:40:01.123456Z" for Unix time t. */
static void add_time(struct evbuffer *b, double t)
{
	char s[64];
	/* Round to the microsecond: the double holds 1795304772.357857 as
	 * ...857 minus a little, which truncation would print as ...856.
	 * (By hand, not llround(): libm would be the master's only use of
	 * it, 0.3 MB of its RSS.) */
	double x = t * 1e6;
	long long us = x > 0 ? (long long)(x + 0.5) : 0;
	time_t sec = (time_t)(us / 1000000);
	struct tm tm;

	gmtime_r(&sec, &tm);
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	evbuffer_add_printf(b, "%s.%06lldZ", s, us % 1000000);
}

void fpool__text_escape(struct evbuffer *b, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0, n;

	/* Runs of plain text are added in one piece: captured lines, the
	 * bulk of a busy log, are rarely anything else. */
	while (i < len) {
		unsigned char c = p[i];

		if (c >= 0x20 && c < 0x7f) {
			i++;
			continue;
		}
		n = c == '\t'	? 1
		    : c >= 0x80 ? fpool__utf8_seq(p + i, len - i)
				: 0;
		/* U+0080..U+009F, the C1 controls (CSI is U+009B). */
		if (n == 2 && c == 0xc2 && p[i + 1] < 0xa0)
			n = 0;
		if (n > 0) {
			i += n;
			continue;
		}
		evbuffer_add(b, s + run, i - run);
		if (c == '\n')
			evbuffer_add(b, "\\n", 2);
		else if (c == '\r')
			evbuffer_add(b, "\\r", 2);
		else if (c == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 &&
			 p[i + 1] < 0xa0)
			evbuffer_add_printf(b, "\\u%04x", p[++i]);
		else
			evbuffer_add_printf(b, "\\x%02x", c);
		run = ++i;
	}
	evbuffer_add(b, s + run, len - run);
}

/* A field value in text form: bare when it is a plain word, else quoted
 * with the quote and backslash escaped, and control characters and bytes
 * that are not UTF-8 escaped as everywhere in the text log. */
static void add_text_value(struct evbuffer *b, const char *v)
{
	const char *p;
	bool plain = *v != '\0';

	for (p = v; *p && plain; p++)
		plain = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f &&
			*p != '"' && *p != '=' && *p != '\\';
	if (plain) {
		evbuffer_add(b, v, strlen(v));
		return;
	}
	evbuffer_add(b, "\"", 1);
	for (p = v; *p;) {
		size_t n = strcspn(p, "\"\\");

		fpool__text_escape(b, p, n);
		p += n;
		if (*p != '\0') {
			evbuffer_add_printf(b, "\\%c", *p);
			p++;
		}
	}
	evbuffer_add(b, "\"", 1);
}

/*
 * The text form: one line per record, whatever the record holds.  A
 * worker's message, field or output line that contains a newline or an
 * escape sequence must not forge a line of the master's (a timestamp and
 * "master:") or reach the operator's terminal as a control sequence, so
 * control characters are written escaped (\n, \r, \xNN, \uNNNN for C1).
 */
static void format_text(struct evbuffer *b, const struct fpool__record *r)
{
	if (r->stream != NULL) {
		/* A captured line: the worker's own bytes, tagged. */
		evbuffer_add_printf(b, "[worker %d pid %d] ", r->worker,
				    (int)r->pid);
		fpool__text_escape(b, r->msg, r->msglen);
		evbuffer_add(b, "\n", 1);
		return;
	}
	add_time(b, r->time);
	evbuffer_add_printf(b, " %s ", fpool__level_name(r->level));
	if (r->worker >= 0)
		evbuffer_add_printf(b, "worker %d pid %d: ", r->worker,
				    (int)r->pid);
	else
		evbuffer_add(b, "master: ", 8);
	fpool__text_escape(b, r->msg, r->msglen);
	for (size_t i = 0; i < r->nfields; i++) {
		evbuffer_add(b, " ", 1);
		fpool__text_escape(b, r->fields[i].key,
				   strlen(r->fields[i].key));
		evbuffer_add(b, "=", 1);
		add_text_value(b, r->fields[i].value);
	}
	evbuffer_add(b, "\n", 1);
}

#define GEN_KEY(g, k) fpool__json_strn((g), (k), sizeof(k) - 1)

/* A string that may hold any bytes: made valid UTF-8 first. */
static bool gen_bytes(yajl_gen g, const char *s, size_t len)
{
	size_t n;
	char *clean;
	bool ok;

	/* yajl escapes control characters, NUL included, as \u00XX. */
	if (fpool__utf8_valid(s, len))
		return fpool__json_strn(g, s, len);
	clean = fpool__utf8_sanitize(s, len, true, &n);
	ok = clean != NULL && fpool__json_strn(g, clean, n);
	free(clean);
	return ok;
}

int fpool__record_json(const struct fpool__record *r, struct evbuffer *b)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	struct evbuffer *t = evbuffer_new();
	const unsigned char *out;
	size_t n;
	bool ok;

	if (g == NULL || t == NULL) {
		if (g != NULL)
			yajl_gen_free(g);
		if (t != NULL)
			evbuffer_free(t);
		return -ENOMEM;
	}
	add_time(t, r->time);
	n = evbuffer_get_length(t);
	ok = yajl_gen_map_open(g) == yajl_gen_status_ok && GEN_KEY(g, "time") &&
	     fpool__json_strn(g, (const char *)evbuffer_pullup(t, -1), n) &&
	     GEN_KEY(g, "level") &&
	     fpool__json_str(g, fpool__level_name(r->level)) &&
	     GEN_KEY(g, "origin") &&
	     (r->worker >= 0 ? GEN_KEY(g, "worker") : GEN_KEY(g, "master"));
	if (ok && r->worker >= 0)
		ok = GEN_KEY(g, "worker") &&
		     yajl_gen_integer(g, r->worker) == yajl_gen_status_ok;
	ok = ok && GEN_KEY(g, "pid") &&
	     yajl_gen_integer(g, r->pid) == yajl_gen_status_ok;
	if (ok && r->stream != NULL)
		ok = GEN_KEY(g, "stream") &&
		     fpool__json_strn(g, r->stream, strlen(r->stream));
	ok = ok && GEN_KEY(g, "msg") && gen_bytes(g, r->msg, r->msglen);
	if (ok && r->nfields > 0) {
		ok = GEN_KEY(g, "fields") &&
		     yajl_gen_map_open(g) == yajl_gen_status_ok;
		for (size_t i = 0; ok && i < r->nfields; i++)
			ok = gen_bytes(g, r->fields[i].key,
				       strlen(r->fields[i].key)) &&
			     gen_bytes(g, r->fields[i].value,
				       strlen(r->fields[i].value));
		ok = ok && yajl_gen_map_close(g) == yajl_gen_status_ok;
	}
	ok = ok && yajl_gen_map_close(g) == yajl_gen_status_ok &&
	     yajl_gen_get_buf(g, &out, &n) == yajl_gen_status_ok;
	if (ok)
		ok = evbuffer_add(b, out, n) == 0 &&
		     evbuffer_add(b, "\n", 1) == 0;
	yajl_gen_free(g);
	evbuffer_free(t);
	return ok ? 0 : -EINVAL;
}

int fpool__record_format(const struct fpool__record *r, struct evbuffer *b)
{
	if (sink.format == FPOOL_LOG_JSON)
		return fpool__record_json(r, b);
	format_text(b, r);
	return 0;
}

void fpool__log_flush(void)
{
	/* Set before writing: a sink that reports dropped records logs
	 * through here again. */
	size_t n = sink.ndirty;
	struct fpool__sink *v[FPOOL_NELEM(sink.dirty)];

	memcpy(v, sink.dirty, n * sizeof(*v));
	sink.ndirty = 0;
	for (size_t i = 0; i < n; i++)
		fpool__sink_flush(v[i]);
}

/* The most bytes r can take formatted: every byte escaped as \u00XX
 * (JSON) at worst, plus the time, origin and keys' punctuation. */
static size_t record_bound(const struct fpool__record *r)
{
	size_t n = r->msglen + 32;

	for (size_t i = 0; i < r->nfields; i++)
		n += strlen(r->fields[i].key) + strlen(r->fields[i].value) + 8;
	return 6 * n + 256;
}

void fpool__log_record(struct fpool__sink *to, const struct fpool__record *r,
		       bool now)
{
	struct evbuffer *q;
	size_t i;

	if (r->stream == NULL && r->level < sink.level)
		return;
	if (to == NULL && (to = log_sink()) == NULL)
		return;
	/* Formatted straight into the sink's queue: no copy, and no buffer
	 * of its own per record. */
	if ((q = fpool__sink_room(to, record_bound(r))) == NULL)
		return;
	fpool__record_format(r, q);
	fpool__sink_added(to);
	for (i = 0; i < sink.ndirty && sink.dirty[i] != to; i++)
		;
	if (i == sink.ndirty) {
		if (sink.ndirty == FPOOL_NELEM(sink.dirty))
			fpool__log_flush();
		sink.dirty[sink.ndirty++] = to;
	}
	if (now || fpool__sink_queued(to) >= BATCH_MAX)
		fpool__log_flush();
}

/* In a worker: hand the record to the master.  0 or -errno. */
static int send_to_master(struct fpool__record *r)
{
	struct fpool__msg m = {
		.type = FPOOL_MSG_LOG,
		.level = r->level,
		.time = r->time,
		.fields = (struct fpool_log_field *)r->fields,
		.nfields = r->nfields,
	};
	struct fpool_log_field clean[FPOOL_LOG_MAX_FIELDS];
	size_t n;
	int err;

	/* The channel carries valid UTF-8 only. */
	m.text = fpool__utf8_sanitize(r->msg, r->msglen, false, &n);
	if (m.nfields > FPOOL_LOG_MAX_FIELDS)
		m.nfields = FPOOL_LOG_MAX_FIELDS;
	for (size_t i = 0; i < m.nfields; i++) {
		clean[i].key = fpool__utf8_sanitize(
			r->fields[i].key, strlen(r->fields[i].key), false, &n);
		clean[i].value = fpool__utf8_sanitize(
			r->fields[i].value, strlen(r->fields[i].value), false,
			&n);
	}
	m.fields = clean;
	err = m.text == NULL ? -ENOMEM : 0;
	for (size_t i = 0; err == 0 && i < m.nfields; i++)
		if (clean[i].key == NULL || clean[i].value == NULL)
			err = -ENOMEM;
	if (err == 0)
		err = fpool__msg_send(sink.chan, &m, true);
	free(m.text);
	for (size_t i = 0; i < m.nfields; i++) {
		free((char *)clean[i].key);
		free((char *)clean[i].value);
	}
	return err;
}

static void log_va(enum fpool_log_level level, int err,
		   const struct fpool_log_field *fields, size_t nfields,
		   const char *fmt, va_list ap) FPOOL_PRINTF(5, 0);

static void log_va(enum fpool_log_level level, int err,
		   const struct fpool_log_field *fields, size_t nfields,
		   const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	struct fpool__record r = {
		.time = fpool__realtime(),
		.level = level,
		.worker = sink.worker,
		.pid = getpid(),
		.msg = msg,
		.fields = fields,
		.nfields = nfields,
	};
	int n;

	if (level < sink.level || fpool__level_name(level) == NULL)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	if (err != 0)
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s",
			      strerror(err));
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	r.msglen = (size_t)n;
	/* A worker whose channel is gone writes to its stderr, which the
	 * master captures. */
	if (sink.chan >= 0 && send_to_master(&r) == 0)
		return;
	fpool__log_record(NULL, &r, true);
}

void fpool_log(enum fpool_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(level, 0, NULL, 0, fmt, ap);
	va_end(ap);
}

void fpool_log_fields(enum fpool_log_level level,
		      const struct fpool_log_field *fields, size_t nfields,
		      const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(level, 0, fields, nfields, fmt, ap);
	va_end(ap);
}

void fpool__log_errno(enum fpool_log_level level, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_va(level, err, NULL, 0, fmt, ap);
	va_end(ap);
}

static void libevent_log_cb(int severity, const char *msg)
{
	enum fpool_log_level level = FPOOL_LOG_DEBUG;

	if (severity == EVENT_LOG_WARN)
		level = FPOOL_LOG_WARNING;
	else if (severity == EVENT_LOG_ERR)
		level = FPOOL_LOG_ERROR;
	else if (severity == EVENT_LOG_MSG)
		level = FPOOL_LOG_INFO;
	fpool_log(level, "libevent: %s", msg);
}

void fpool__log_libevent(void)
{
	event_set_log_callback(libevent_log_cb);
}
