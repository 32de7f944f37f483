/*
 * quickstart: the smallest forkpool program.
 *
 * A master process forks a pool of workers (two by default, or argv[1])
 * and watches them: a worker that dies is replaced at once.  Each worker
 * runs a "blocking" main, a plain loop that says "I am here" once a
 * second for as long as fpool_worker_is_running() says it should go on.
 * SIGTERM or SIGINT (Ctrl-C) to the master stops the workers, waits for
 * them, and makes fpool_pool_run() return.
 *
 * What a worker prints on stdout is captured by the master and written to
 * its stderr as "[worker ID pid PID] line".
 *
 *     build/examples/quickstart [WORKERS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "forkpool.h"

/* An on_start hook runs in the new worker process before main.  This is
 * where a worker opens what it needs; a non-zero result makes the start
 * fail, and the master counts it as such. */
static int on_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	printf("worker %u pid %d: starting\n", fpool_worker_id(w),
	       (int)fpool_worker_pid(w));
	return 0;
}

/* An on_shutdown hook runs after main returned, before the worker exits:
 * the place to close and free what on_start opened. */
static int on_shutdown(struct fpool_worker *w, void *arg)
{
	(void)arg;
	printf("worker %u pid %d: shutting down\n", fpool_worker_id(w),
	       (int)fpool_worker_pid(w));
	return 0;
}

/*
 * The worker's main, in the blocking style.  fpool_worker_is_running()
 * runs one non-blocking turn of the worker's event loop, where signals
 * are handled and a heartbeat goes to the master, and then says whether
 * the worker should go on.  So the loop must call it often: a SIGTERM
 * waits for the next call, and a worker that makes none for
 * cfg.worker_timeout (30 s by default) is killed as hung.  We sleep in
 * 100 ms steps, not 1 s, so that a stop is obeyed within 100 ms.
 */
static int worker_main(struct fpool_worker *w, void *arg)
{
	const struct timespec step = { .tv_sec = 0, .tv_nsec = 100000000 };
	unsigned steps = 0;

	(void)arg;
	while (fpool_worker_is_running(w)) {
		if (steps++ % 10 == 0)
			printf("I am here: worker %u pid %d\n",
			       fpool_worker_id(w), (int)fpool_worker_pid(w));
		nanosleep(&step, NULL);
	}
	/* The result is the worker's exit status. */
	return 0;
}

int main(int argc, char **argv)
{
	/* What every worker runs; the hooks and main also get `.arg`. */
	static const struct fpool_worker_def def = {
		.name = "quickstart",
		.on_start = on_start,
		.on_shutdown = on_shutdown,
		.main = worker_main,
	};
	struct fpool_config cfg;
	struct fpool_pool *pool;
	int r;

	/* A worker's stdout is a pipe to the master, which stdio would fill
	 * in 4 KiB blocks; line buffering sends each line when printed.
	 * Workers inherit this setting through fork(). */
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* Start from the defaults (timeouts, check interval), then say how
	 * many workers to run and what they are. */
	fpool_config_init(&cfg);
	cfg.workers = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
	cfg.worker = &def;

	/* The pool copies the config; it checks it too (-EINVAL). */
	if ((r = fpool_pool_new(&pool, &cfg)) != 0) {
		fprintf(stderr, "quickstart: %s\n", fpool_strerror(r));
		return 1;
	}
	/* Fork the workers and serve until SIGTERM/SIGINT; the workers never
	 * return from here, only the master does. */
	r = fpool_pool_run(pool);
	if (r != 0)
		fprintf(stderr, "quickstart: %s\n", fpool_strerror(r));
	fpool_pool_free(pool);
	return r == 0 ? 0 : 1;
}
