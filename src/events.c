/*
 * What the pool tells of itself: worker events (started, ready, exited)
 * to the program's fpool_pool_on_worker() callback, and every event --
 * those, a reload or an upgrade beginning and ending, a scale, a slot's
 * backoff, a worker's message -- as one JSON line to the `ctl events`
 * clients (control.c keeps them, and drops one that falls behind):
 *
 *   {"event":"exited","time":1764000000.123456,"worker":1,"pid":4242,
 *    "status":"killed by SIGKILL","signal":"SIGKILL"}
 *
 * A line is only built when a client watches.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <yajl/yajl_gen.h>

#include "fpool-int.h"

int fpool_pool_on_worker(struct fpool_pool *pool, fpool_pool_worker_cb cb,
			 void *arg)
{
	pool->worker_cb = cb;
	pool->worker_arg = arg;
	return 0;
}

/* A line begun: {"event":NAME,"time":T.  NULL when no client watches
 * (or out of memory: the event is not shown). */
static yajl_gen line_begin(struct fpool_pool *pool, const char *name)
{
	char num[32];
	yajl_gen g;

	if (!fpool__control_watched(pool))
		return NULL;
	g = yajl_gen_alloc(NULL);
	if (g == NULL)
		return NULL;
	snprintf(num, sizeof(num), "%.6f", fpool__realtime());
	yajl_gen_map_open(g);
	fpool__json_str(g, "event");
	fpool__json_str(g, name);
	fpool__json_str(g, "time");
	yajl_gen_number(g, num, strlen(num));
	return g;
}

/* Close the line and hand it to the watching clients. */
static void line_end(struct fpool_pool *pool, yajl_gen g)
{
	const unsigned char *buf;
	size_t len;

	yajl_gen_map_close(g);
	if (yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok)
		fpool__control_broadcast(pool, (const char *)buf, len);
	yajl_gen_free(g);
}

static void key_int(yajl_gen g, const char *key, long long v)
{
	fpool__json_str(g, key);
	fpool__json_int(g, v);
}

void fpool__event_worker(struct fpool_pool *pool,
			 enum fpool_worker_event_type type, unsigned id,
			 pid_t pid, int status)
{
	static const char *const names[] = { "started", "ready", "exited" };
	struct fpool_worker_event ev = {
		.type = type, .id = id, .pid = pid, .status = status
	};
	char how[96];
	yajl_gen g;

	if ((g = line_begin(pool, names[type])) != NULL) {
		key_int(g, "worker", id);
		key_int(g, "pid", pid);
		if (type == FPOOL_WORKER_EXITED) {
			fpool__describe_status(status, how, sizeof(how));
			fpool__json_str(g, "status");
			fpool__json_str(g, how);
			if (WIFEXITED(status)) {
				key_int(g, "code", WEXITSTATUS(status));
			} else if (WIFSIGNALED(status)) {
				fpool__json_str(g, "signal");
				fpool__json_str(
					g, fpool__signame(WTERMSIG(status)));
			}
		}
		line_end(pool, g);
	}
	if (pool->worker_cb != NULL)
		pool->worker_cb(pool, &ev, pool->worker_arg);
}

void fpool__event_phase(struct fpool_pool *pool, const char *what,
			const char *phase, const char *detail)
{
	yajl_gen g = line_begin(pool, what);

	if (g == NULL)
		return;
	fpool__json_str(g, "phase");
	fpool__json_str(g, phase);
	if (detail != NULL) {
		fpool__json_str(g, "detail");
		fpool__json_str(g, detail);
	}
	line_end(pool, g);
}

void fpool__event_scale(struct fpool_pool *pool, unsigned from, unsigned to)
{
	yajl_gen g = line_begin(pool, "scale");

	if (g == NULL)
		return;
	key_int(g, "from", from);
	key_int(g, "to", to);
	line_end(pool, g);
}

void fpool__event_backoff(struct fpool_pool *pool, unsigned id, double delay,
			  const char *why)
{
	char num[32];
	yajl_gen g = line_begin(pool, "backoff");

	if (g == NULL)
		return;
	key_int(g, "worker", id);
	snprintf(num, sizeof(num), "%.3f", delay);
	fpool__json_str(g, "delay");
	yajl_gen_number(g, num, strlen(num));
	fpool__json_str(g, "why");
	fpool__json_str(g, why);
	line_end(pool, g);
}

/* The message as a JSON string when it is text (UTF-8 without NUL), else
 * its bytes in hex ("hex"). */
static void gen_data(yajl_gen g, const void *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *b = data;
	static char hex[2 * FPOOL_MESSAGE_MAX]; /* the master has one thread */

	if (memchr(data, '\0', len) == NULL && fpool_utf8_valid(data, len)) {
		fpool__json_str(g, "data");
		fpool__json_strn(g, data, len);
		return;
	}
	for (size_t i = 0; i < len && i < FPOOL_MESSAGE_MAX; i++) {
		hex[2 * i] = digits[b[i] >> 4];
		hex[2 * i + 1] = digits[b[i] & 15];
	}
	fpool__json_str(g, "hex");
	fpool__json_strn(
		g, hex,
		2 * (len < FPOOL_MESSAGE_MAX ? len : FPOOL_MESSAGE_MAX));
}

void fpool__events_message(struct fpool_pool *pool, unsigned id,
			   const void *data, size_t len)
{
	yajl_gen g = line_begin(pool, "message");

	if (g == NULL)
		return;
	key_int(g, "worker", id);
	gen_data(g, data, len);
	line_end(pool, g);
}
