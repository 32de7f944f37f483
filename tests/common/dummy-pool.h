/*
 * A pool that is never run, for tests that drive the master's code
 * without forking a worker: the control protocol's unit test
 * (tests/unit/test-control.c) and its fuzz target
 * (tests/fuzz/fuzz-control.c).  Include after "fpool-int.h".
 */
#ifndef FPOOL_TESTS_DUMMY_POOL_H
#define FPOOL_TESTS_DUMMY_POOL_H

/* Never called: nothing is forked. */
static inline int dummy_main(struct fpool_worker *w, void *arg)
{
	(void)w;
	(void)arg;
	return 0;
}

static const struct fpool_worker_def dummy_worker = { .name = "dummy",
						      .main = dummy_main };

/* A new pool of `workers` slots of the dummy worker, with the program's
 * other defaults, not running; 0 or a negative errno. */
static inline int dummy_pool_new(struct fpool_pool **pool, unsigned workers)
{
	struct fpool_config cfg;

	fpool_config_init(&cfg);
	cfg.workers = workers;
	cfg.worker = &dummy_worker;
	return fpool_pool_new(pool, &cfg);
}

#endif
