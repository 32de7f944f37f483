/*
 * settings: the master pushes a setting to every worker and collects
 * their replies; it watches its workers start, get ready and exit.
 *
 * Once every worker is ready (fpool_pool_on_worker() tells), the master
 * sends "greeting=hola" to all of them (fpool_pool_send() with
 * FPOOL_ALL_WORKERS).  Each worker takes it in its own loop
 * (fpool_worker_on_message()), keeps it, and replies "ok ID greeting=hola"
 * (fpool_worker_send()).  The master counts the replies in its loop
 * (fpool_pool_on_message()); with one from every worker it stops the
 * pool, and the workers' exits come as the last events.  It prints each
 * event and reply, then a summary, and exits 0 if every worker started,
 * got ready, replied and exited once.
 *
 *     build/examples/settings [WORKERS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "forkpool.h"

#define MAX_WORKERS 64

/* The worker's copy of the setting. */
static char greeting[64] = "hello";

static void on_master_message(struct fpool_worker *w, const void *data,
			      size_t len, void *arg)
{
	char reply[128];
	int n, r;

	(void)arg;
	if (len > 9 && memcmp(data, "greeting=", 9) == 0 &&
	    len - 9 < sizeof(greeting)) {
		memcpy(greeting, (const char *)data + 9, len - 9);
		greeting[len - 9] = '\0';
	}
	n = snprintf(reply, sizeof(reply), "ok %u greeting=%s",
		     fpool_worker_id(w), greeting);
	if ((r = fpool_worker_send(w, reply, (size_t)n)) != 0)
		fprintf(stderr, "worker %u: cannot reply: %s\n",
			fpool_worker_id(w), fpool_strerror(r));
}

static int worker_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_on_message(w, on_master_message, NULL);
}

/* An event-style main: the loop runs until the worker is told to stop;
 * the messages come through it. */
static int worker_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w) == 0 ? 0 : 1;
}

struct tally {
	unsigned workers;
	unsigned started, ready, exited, replies;
	unsigned replied[MAX_WORKERS];
	int sent;
};

static void on_worker(struct fpool_pool *pool,
		      const struct fpool_worker_event *ev, void *arg)
{
	static const char *const names[] = { "started", "ready", "exited" };
	struct tally *t = arg;

	printf("event: worker %u pid %d %s", ev->id, (int)ev->pid,
	       names[ev->type]);
	if (ev->type == FPOOL_WORKER_EXITED)
		printf(" (status %d)", WIFEXITED(ev->status)
					       ? WEXITSTATUS(ev->status)
					       : 128 + WTERMSIG(ev->status));
	putchar('\n');
	if (ev->type == FPOOL_WORKER_STARTED)
		t->started++;
	else if (ev->type == FPOOL_WORKER_EXITED)
		t->exited++;
	else if (++t->ready == t->workers) {
		/* Every worker runs: push the setting to all of them. */
		t->sent = fpool_pool_send(pool, FPOOL_ALL_WORKERS,
					  "greeting=hola", 13);
		printf("sent the setting to %d workers\n", t->sent);
		if (t->sent != (int)t->workers)
			fpool_pool_stop(pool, 1);
	}
}

static void on_reply(struct fpool_pool *pool, unsigned id, const void *data,
		     size_t len, void *arg)
{
	struct tally *t = arg;

	printf("reply from worker %u: %.*s\n", id, (int)len,
	       (const char *)data);
	if (id < MAX_WORKERS && t->replied[id]++ == 0 &&
	    ++t->replies == t->workers)
		fpool_pool_stop(pool, 1); /* everyone has it: done */
}

int main(int argc, char **argv)
{
	static const struct fpool_worker_def def = {
		.name = "settings",
		.on_start = worker_start,
		.main = worker_main,
	};
	struct tally t = { 0 };
	struct fpool_config cfg;
	struct fpool_pool *pool;
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	t.workers = argc > 1 ? (unsigned)atoi(argv[1]) : 3;
	if (t.workers < 1 || t.workers > MAX_WORKERS) {
		fprintf(stderr, "settings: WORKERS is 1 to %d\n", MAX_WORKERS);
		return 2;
	}
	fpool_config_init(&cfg);
	cfg.workers = t.workers;
	cfg.worker = &def;
	if ((r = fpool_pool_new(&pool, &cfg)) != 0) {
		fprintf(stderr, "settings: %s\n", fpool_strerror(r));
		return 1;
	}
	fpool_pool_on_worker(pool, on_worker, &t);
	fpool_pool_on_message(pool, on_reply, &t);
	r = fpool_pool_run(pool);
	if (r != 0)
		fprintf(stderr, "settings: %s\n", fpool_strerror(r));
	fpool_pool_free(pool);
	printf("workers %u: started %u, ready %u, replies %u, exited %u\n",
	       t.workers, t.started, t.ready, t.replies, t.exited);
	return r == 0 && t.started == t.workers && t.ready == t.workers &&
			       t.replies == t.workers && t.exited == t.workers
		       ? 0
		       : 1;
}
