/*
 * logs: the master's log set up by a master hook, and workers logging
 * through it.  fpool_log() in a worker writes nothing itself: the record
 * goes to the master over the worker's channel, and the master writes it
 * to its own log, tagged with the worker's id and pid.  So only the master
 * needs a log file, and the records of all workers land in it whole.
 * Here a master on_start hook sends the log to a file as JSON lines (or
 * text) and drops records below a level; each worker logs three "tick"
 * records with a count field, one a second, then idles until stopped.
 *
 *     build/examples/logs [LOGFILE [json|text [debug|info|warning|error]]]
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "forkpool.h"

struct settings {
	const char *path;
	enum fpool_log_format format;
	enum fpool_log_level level;
};

/* A master hook runs in the master before the first worker is forked, so
 * the workers inherit what it sets (here, the level). */
static int master_on_start(struct fpool_pool *pool, void *arg)
{
	const struct settings *s = arg;
	int r;

	(void)pool;
	fpool_log_set_level(s->level);
	if ((r = fpool_log_open(s->path, s->format)) != 0) {
		fprintf(stderr, "logs: %s: %s\n", s->path, fpool_strerror(r));
		return r; /* the pool does not start; fpool_pool_run fails */
	}
	fpool_log(FPOOL_LOG_INFO, "logging to %s", s->path);
	return 0;
}

/* The worker's timer: one record per second, three in all. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	static unsigned count;
	struct event *ev = arg;
	char n[16];
	struct fpool_log_field fields[] = { { "count", n },
					    { "example", "logs" } };

	(void)fd;
	(void)what;
	snprintf(n, sizeof(n), "%u", ++count);
	fpool_log_fields(FPOOL_LOG_INFO, fields, 2, "tick");
	fpool_log(FPOOL_LOG_DEBUG, "a debug record, kept at level debug only");
	if (count == 3)
		event_del(ev); /* done; the worker keeps running, idle */
}

/* SIGTERM runs the on_stop hooks; after them the loop lasts as long as
 * the worker's own events, so a pending timer must go or it holds it up. */
static int stop_ticks(struct fpool_worker *w, void *arg)
{
	(void)w;
	event_del(arg);
	return 0;
}

/* The event-driven main: add our events to the worker's own loop, then
 * let fpool_worker_loop() run it until the worker is stopped. */
static int worker_main(struct fpool_worker *w, void *arg)
{
	const struct timeval second = { 1, 0 };
	struct event *ev = event_new(fpool_worker_base(w), -1, EV_PERSIST,
				     tick_cb, event_self_cbarg());
	int r;

	(void)arg;
	/* Hooks can also be connected at run time: this one gets `ev`. */
	if (ev == NULL || event_add(ev, &second) != 0 ||
	    fpool_worker_on_stop(w, stop_ticks, ev) != 0)
		return 1;
	r = fpool_worker_loop(w);
	event_free(ev);
	return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct fpool_worker_def def = {
		.name = "logs",
		.main = worker_main,
	};
	struct settings s = { argc > 1 ? argv[1] : "forkpool-logs.log",
			      FPOOL_LOG_JSON, FPOOL_LOG_INFO };
	struct fpool_config cfg;
	struct fpool_pool *pool = NULL;
	int r;

	if (argc > 2 && strcmp(argv[2], "text") == 0)
		s.format = FPOOL_LOG_TEXT;
	if (argc > 3 && fpool_log_level_parse(argv[3], &s.level) != 0) {
		fprintf(stderr, "logs: unknown level %s\n", argv[3]);
		return 2;
	}
	fpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.worker = &def;
	if ((r = fpool_pool_new(&pool, &cfg)) == 0 &&
	    (r = fpool_pool_on_start(pool, master_on_start, &s)) == 0)
		r = fpool_pool_run(pool);
	if (r != 0)
		fprintf(stderr, "logs: %s\n", fpool_strerror(r));
	fpool_pool_free(pool);
	/* Back to stderr: closes the log file and frees its name. */
	fpool_log_open(NULL, FPOOL_LOG_TEXT);
	return r == 0 ? 0 : 1;
}
