/*
 * Logging: one line per record on stderr,
 *
 *     2026-11-21T23:40:01.123456Z info master: worker 0 pid 4711 ready
 *
 * with the origin of the record ("master" or "worker ID pid PID").  The
 * time has microseconds so that respawn latency can be read off the log.
 * Each record is formatted into one buffer and written with one write(2),
 * so lines from several processes sharing stderr never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

static enum fpool_log_level log_level = FPOOL_LOG_INFO;
static char log_origin[64] = "master";

static const char *const level_names[] = {
	[FPOOL_LOG_DEBUG] = "debug",
	[FPOOL_LOG_INFO] = "info",
	[FPOOL_LOG_WARNING] = "warning",
	[FPOOL_LOG_ERROR] = "error",
};

void fpool_log_set_level(enum fpool_log_level level)
{
	log_level = level;
}

int fpool_log_level_parse(const char *s, enum fpool_log_level *out)
{
	for (size_t i = 0; i < FPOOL_NELEM(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum fpool_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void fpool__log_set_origin(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(log_origin, sizeof(log_origin), fmt, ap);
	va_end(ap);
}

static void log_write(enum fpool_log_level level, int err, const char *fmt,
		      va_list ap) FPOOL_PRINTF(3, 0);

static void log_write(enum fpool_log_level level, int err, const char *fmt,
		      va_list ap)
{
	char line[4096];
	struct timeval tv;
	struct tm tm;
	size_t n, cap = sizeof(line) - 1; /* room for the newline */
	int r;

	if (level < log_level)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(line, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, cap - n, ".%06ldZ %s %s: ", (long)tv.tv_usec,
		     level_names[level], log_origin);
	n += r > 0 ? (size_t)r : 0;
	if (n < cap) {
		r = vsnprintf(line + n, cap - n, fmt, ap);
		n += r > 0 ? (size_t)r : 0;
	}
	if (err != 0 && n < cap) {
		r = snprintf(line + n, cap - n, ": %s", strerror(err));
		n += r > 0 ? (size_t)r : 0;
	}
	if (n > cap)
		n = cap; /* truncated: keep the line whole and terminated */
	line[n++] = '\n';

	/* stderr is where the operator looks; if it is gone there is no one
	 * to tell, so a failed write is dropped on purpose. */
	for (size_t off = 0; off < n;) {
		ssize_t w = write(STDERR_FILENO, line + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

void fpool_log(enum fpool_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, 0, fmt, ap);
	va_end(ap);
}

void fpool__log_errno(enum fpool_log_level level, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, err, fmt, ap);
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
