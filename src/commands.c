/*
 * The control socket's commands: one request line in, one reply line out
 * (DESIGN.md, "Control socket").  status, scale, add, remove, kill,
 * reload, upgrade, stop and output, each carried out through the pool's own
 * functions (requests.c, supervise.c); control.c moves the lines.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

/* Nesting a request may have: requests are flat objects. */
#define CONTROL_DEPTH 32

/* ---- replies ------------------------------------------------------------ */

static bool gnum(yajl_gen g, double v)
{
	char num[64];

	snprintf(num, sizeof(num), "%.3f", v);
	return yajl_gen_number(g, num, strlen(num)) == yajl_gen_status_ok;
}

/* A fpool_pool_snapshot() callback: 0 to go on. */
static int gen_info(struct fpool_pool *pool, const struct fpool_worker_info *i,
		    void *arg)
{
	yajl_gen g = arg;
	long rss = i->pid > 0 ? fpool__rss_kib(i->pid) : -1;
	bool ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		  fpool__json_str(g, "id") && fpool__json_int(g, i->id) &&
		  fpool__json_str(g, "pid") &&
		  (i->pid > 0 ? fpool__json_int(g, i->pid)
			      : fpool__json_null(g)) &&
		  fpool__json_str(g, "state") && fpool__json_str(g, i->state);

	if (ok && i->pid > 0)
		ok = fpool__json_str(g, "uptime") && gnum(g, i->uptime);
	else if (ok)
		ok = fpool__json_str(g, "backoff_left") &&
		     gnum(g, i->backoff_left);
	ok = ok && fpool__json_str(g, "restarts") &&
	     fpool__json_int(g, i->restarts) &&
	     fpool__json_str(g, "last_exit") &&
	     (i->last_exit ? fpool__json_str(g, i->last_exit)
			   : fpool__json_null(g));
	if (ok && i->pid > 0)
		ok = fpool__json_str(g, "heartbeat_age") &&
		     gnum(g, i->heartbeat_age) &&
		     fpool__json_str(g, "rss_kib") &&
		     (rss >= 0 ? fpool__json_int(g, rss)
			       : fpool__json_null(g)) &&
		     fpool__json_str(g, "requests") &&
		     fpool__json_int(g, (long long)i->requests) &&
		     fpool__json_str(g, "role") && fpool__json_str(g, i->role);
	if (ok && i->activity[0] != '\0')
		ok = fpool__json_str(g, "activity") &&
		     fpool__json_str(g, i->activity);
	(void)pool;
	return ok && yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -ENOMEM;
}

static bool gen_status(yajl_gen g, struct fpool_pool *pool)
{
	bool ok;

	ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
	     fpool__json_str(g, "pid") &&
	     fpool__json_int(g, pool->master_pid) &&
	     fpool__json_str(g, "target") &&
	     fpool__json_int(g, fpool_pool_size(pool)) &&
	     fpool__json_str(g, "live") &&
	     fpool__json_int(g, fpool__pool_live(pool)) &&
	     fpool__json_str(g, "uptime") &&
	     gnum(g, fpool__now() - pool->started) &&
	     fpool__json_str(g, "restarts") &&
	     fpool__json_int(g, fpool__pool_restarts(pool)) &&
	     fpool__json_str(g, "reloading") &&
	     yajl_gen_bool(g, pool->reloading) == yajl_gen_status_ok &&
	     fpool__json_str(g, "upgrade") &&
	     (fpool__upgrade_phase(pool) != NULL
		      ? fpool__json_str(g, fpool__upgrade_phase(pool))
		      : fpool__json_null(g)) &&
	     fpool__json_str(g, "workers") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok &&
	     fpool_pool_snapshot(pool, gen_info, g) == 0;
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

static bool gen_output(yajl_gen g, const struct fpool__ring *ring, unsigned id,
		       size_t lines)
{
	size_t n = ring->n, from = n > lines ? n - lines : 0;
	bool ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		  fpool__json_str(g, "worker") && fpool__json_int(g, id) &&
		  fpool__json_str(g, "lines") &&
		  yajl_gen_array_open(g) == yajl_gen_status_ok;

	for (size_t i = from; ok && i < n; i++) {
		size_t len, clean_len;
		const char *line = fpool__ring_get(ring, i, &len);
		char *clean = fpool__utf8_sanitize(line, len, true, &clean_len);

		ok = clean != NULL &&
		     yajl_gen_string(g, (const unsigned char *)clean,
				     clean_len) == yajl_gen_status_ok;
		free(clean);
	}
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

/* ---- requests ----------------------------------------------------------- */

/* A whole number in [min, max] under `key`.  0, or a message. */
static const char *get_uint(yajl_val req, const char *key, long long min,
			    long long max, long long *out)
{
	static char why[96];
	yajl_val v = fpool__json_get(req, key);

	if (v == NULL) {
		snprintf(why, sizeof(why), "missing \"%s\"", key);
		return why;
	}
	if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < min ||
	    YAJL_GET_INTEGER(v) > max) {
		snprintf(why, sizeof(why),
			 "\"%s\" must be a whole number from %lld to %lld", key,
			 min, max);
		return why;
	}
	*out = YAJL_GET_INTEGER(v);
	return NULL;
}

int fpool__signal_parse(const char *name)
{
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (int sig = 1; sig < NSIG; sig++) {
		const char *abbrev = sigabbrev_np(sig);

		if (abbrev != NULL && strcmp(abbrev, name) == 0)
			return sig;
	}
	return -EINVAL;
}

/* `send`: {"worker": ID or "all", "data": "text"}; the result is
 * {"sent": N}, the workers it reached. */
static const char *send_message(struct fpool_pool *pool, yajl_val req,
				yajl_gen g)
{
	static char why[160];
	yajl_val wv = fpool__json_get(req, "worker");
	yajl_val dv = fpool__json_get(req, "data");
	unsigned id = FPOOL_ALL_WORKERS;
	long long n;
	const char *err;
	int r;

	if (!YAJL_IS_STRING(dv))
		return "\"data\" must be a string";
	if (YAJL_IS_STRING(wv) && strcmp(wv->u.string, "all") == 0)
		id = FPOOL_ALL_WORKERS;
	else if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1, &n)))
		return "\"worker\" must be a worker id or \"all\"";
	else
		id = (unsigned)n;
	r = fpool_pool_send(pool, id, dv->u.string, strlen(dv->u.string));
	if (r == -ENOENT && id == FPOOL_ALL_WORKERS)
		return "no worker to send it to";
	if (r == -ENOENT)
		snprintf(why, sizeof(why),
			 "worker %u has no process to take it (no such "
			 "worker, or it is stopping)",
			 id);
	else if (r == -EMSGSIZE)
		snprintf(why, sizeof(why), "a message is at most %d bytes",
			 FPOOL_MESSAGE_MAX);
	else if (r == -EAGAIN)
		snprintf(why, sizeof(why),
			 "worker %u's channel is full: it does not read its "
			 "messages",
			 id);
	else if (r == -EOPNOTSUPP)
		snprintf(why, sizeof(why), "exec'd workers take no messages");
	else if (r < 0)
		snprintf(why, sizeof(why), "%s", fpool_strerror(r));
	if (r < 0)
		return why;
	return yajl_gen_map_open(g) == yajl_gen_status_ok &&
			       fpool__json_str(g, "sent") &&
			       fpool__json_int(g, r) &&
			       yajl_gen_map_close(g) == yajl_gen_status_ok
		       ? NULL
		       : "out of memory";
}

/*
 * Carry out one request.  Writes the "result" value into g and returns
 * NULL, or returns the error message (then g is not used).
 */
static const char *execute(struct fpool_pool *pool, yajl_val req,
			   const char *cmd, yajl_gen g, bool *stop,
			   bool *graceful)
{
	static char why[192];
	long long n, id;
	const char *err;
	const struct fpool__ring *ring;
	pid_t pid;
	int r;

	if (strcmp(cmd, "status") == 0)
		return gen_status(g, pool) ? NULL : "out of memory";
	if (strcmp(cmd, "scale") == 0) {
		unsigned long need;

		if ((err = get_uint(req, "workers", 1, FPOOL_MAX_WORKERS, &n)))
			return err;
		if (!fpool__pool_fds_fit(pool, (unsigned)n, &need)) {
			snprintf(
				why, sizeof(why),
				"%lld workers need up to %lu open files in the "
				"master; its limit is %llu",
				n, need, (unsigned long long)pool->nofile);
			return why;
		}
		r = fpool__pool_scale(pool, (unsigned)n);
		if (r != 0)
			return fpool_strerror(r);
		fpool_log(FPOOL_LOG_INFO, "scaled to %lld workers", n);
		return gen_status(g, pool) ? NULL : "out of memory";
	}
	if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) {
		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		r = cmd[0] == 'a'
			    ? fpool_pool_add_worker(pool, (unsigned)id)
			    : fpool_pool_remove_worker(pool, (unsigned)id);
		if (r == -EEXIST)
			return "that worker is already running";
		if (r == -ENOENT)
			return "no such worker";
		if (r == -EBUSY)
			return "cannot remove the last worker";
		if (r == -EMFILE)
			return "one more worker would not fit the master's "
			       "open file limit";
		if (r != 0)
			return fpool_strerror(r);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "kill") == 0) {
		yajl_val sv = fpool__json_get(req, "signal");
		int sig = SIGTERM;

		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		if (sv != NULL &&
		    (!YAJL_IS_STRING(sv) ||
		     (sig = fpool__signal_parse(sv->u.string)) < 0))
			return "\"signal\" must be a signal name such as "
			       "\"TERM\"";
		r = fpool__pool_kill(pool, (unsigned)id, sig, &pid);
		if (r == -ENOENT)
			return "no such worker running";
		if (r != 0)
			return fpool_strerror(r);
		fpool_log(FPOOL_LOG_INFO,
			  "control: sent %s to worker %lld pid %d",
			  fpool__signame(sig), id, (int)pid);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "reload") == 0) {
		if ((r = fpool_pool_reload(pool)) != 0)
			return r == -ESHUTDOWN ? "the pool is not running "
						 "(stopping, or not started)"
			       : pool->refused[0] != '\0' ? pool->refused
							  : fpool_strerror(r);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "stop") == 0) {
		yajl_val gv = fpool__json_get(req, "graceful");

		if (gv != NULL && !YAJL_IS_TRUE(gv) && !YAJL_IS_FALSE(gv))
			return "\"graceful\" must be true or false";
		*stop = true;
		*graceful = gv == NULL || YAJL_IS_TRUE(gv);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "output") == 0) {
		n = 50;
		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		if (fpool__json_get(req, "lines") != NULL &&
		    (err = get_uint(req, "lines", 1, 100000, &n)))
			return err;
		ring = fpool__pool_output(pool, (unsigned)id);
		if (ring == NULL)
			return "no such worker";
		return gen_output(g, ring, (unsigned)id, (size_t)n)
			       ? NULL
			       : "out of memory";
	}
	if (strcmp(cmd, "send") == 0)
		return send_message(pool, req, g);
	if (strcmp(cmd, "events") == 0) {
		/* control.c turns the client into a watcher once this reply
		 * is out. */
		pool->events_asked = true;
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	snprintf(why, sizeof(why),
		 "unknown command \"%.40s\" (status, scale, add, remove, kill, "
		 "reload, upgrade, stop, output, send, events)",
		 cmd);
	return why;
}

static bool hex_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
		      (*s >= 'A' && *s <= 'F')))
			return false;
	return true;
}

/* Build the reply line to one request line into out.  Sets *stop when
 * the request asks the pool to stop (done once the reply is sent). */
void fpool__control_handle(struct fpool_pool *pool, const char *line,
			   size_t len, struct evbuffer *out, bool *stop,
			   bool *graceful)
{
	char errbuf[128] = "";
	yajl_gen g = yajl_gen_alloc(NULL), result = yajl_gen_alloc(NULL);
	yajl_val req = NULL, idv = NULL, cmdv;
	const char *err = NULL, *id = NULL;
	const unsigned char *buf;
	size_t n;
	char *copy = NULL;

	*stop = false;
	if (g == NULL || result == NULL) {
		err = "out of memory";
		goto reply;
	}
	if (len > FPOOL_CONTROL_MAX) {
		err = "request too large";
		goto reply;
	}
	/* yajl_tree_free() recurses once per level: a line of 64 Ki "["
	 * would run the master's stack down. */
	if ((err = fpool_json_check(line, len, CONTROL_DEPTH, 0)) != NULL) {
		static char why[96];

		snprintf(why, sizeof(why), "malformed request: %s", err);
		err = why;
		goto reply;
	}
	copy = malloc(len + 1);
	if (copy == NULL) {
		err = "out of memory";
		goto reply;
	}
	memcpy(copy, line, len);
	copy[len] = '\0';
	req = yajl_tree_parse(copy, errbuf, sizeof(errbuf));
	if (req == NULL) {
		/* yajl's message spans lines; its first says enough. */
		static char why[sizeof(errbuf) + 32];

		errbuf[strcspn(errbuf, "\n")] = '\0';
		snprintf(why, sizeof(why), "malformed JSON: %s", errbuf);
		err = why;
		goto reply;
	}
	if (!YAJL_IS_OBJECT(req)) {
		err = "a request must be a JSON object";
		goto reply;
	}
	idv = fpool__json_get(req, "id");
	if (idv == NULL || !YAJL_IS_STRING(idv) || !hex_id(idv->u.string)) {
		idv = NULL;
		err = "\"id\" must be a string of hex digits";
		goto reply;
	}
	id = idv->u.string;
	cmdv = fpool__json_get(req, "cmd");
	if (cmdv == NULL || !YAJL_IS_STRING(cmdv)) {
		err = "\"cmd\" must be a string";
		goto reply;
	}
	if (strcmp(cmdv->u.string, "upgrade") == 0) {
		/* Answered when the new image has taken over, or why not
		 * (upgrade.c, through fpool__control_answer): no reply now,
		 * and control.c holds the client until then. */
		if ((err = fpool__upgrade_start(pool, id)) == NULL)
			goto out;
	} else {
		err = execute(pool, req, cmdv->u.string, result, stop,
			      graceful);
	}
reply:
	if (g == NULL || result == NULL) {
		evbuffer_add_printf(out, "{\"id\":null,\"ok\":false,"
					 "\"error\":\"out of memory\"}\n");
		goto out;
	}
	yajl_gen_map_open(g);
	fpool__json_str(g, "id");
	if (id != NULL)
		fpool__json_str(g, id);
	else
		yajl_gen_null(g);
	fpool__json_str(g, "ok");
	yajl_gen_bool(g, err == NULL);
	if (err != NULL) {
		fpool__json_str(g, "error");
		fpool__json_str(g, err);
	} else {
		fpool__json_str(g, "result");
		yajl_gen_get_buf(result, &buf, &n);
		/* The result is already JSON: splice it in as a number would
		 * be, yajl_gen_number writes its text verbatim. */
		yajl_gen_number(g, (const char *)buf, n);
	}
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &buf, &n);
	evbuffer_add(out, buf, n);
	evbuffer_add(out, "\n", 1);
out:
	if (g != NULL)
		yajl_gen_free(g);
	if (result != NULL)
		yajl_gen_free(result);
	if (req != NULL)
		yajl_tree_free(req);
	free(copy);
}
