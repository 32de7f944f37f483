/*
 * src/reconfig.c: a new config for a pool (reload with --config).  A config
 * that cannot be used changes nothing and says why; a usable one is
 * applied, except what only a new master can change.  On a pool that does
 * not run: no process is forked.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fpool-int.h"
#include "dummy-pool.h"

static const struct fpool_worker_def other_worker = { .name = "other",
						      .main = dummy_main };

static struct fpool_config base_config(void)
{
	struct fpool_config cfg;

	fpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.worker = &dummy_worker;
	return cfg;
}

/* Nothing changed: compare the fields a reconfigure may touch. */
static void assert_unchanged(const struct fpool_pool *pool,
			     const struct fpool_config *was)
{
	assert_ptr_equal(pool->cfg.worker, was->worker);
	assert_ptr_equal(pool->cfg.worker_module, was->worker_module);
	assert_int_equal(pool->cfg.workers, was->workers);
	assert_true(pool->cfg.graceful_timeout == was->graceful_timeout);
	assert_int_equal(pool->cfg.max_requests, was->max_requests);
	assert_ptr_equal(pool->cfg.stdout_file, was->stdout_file);
	assert_int_equal(fpool_pool_size(pool), was->workers);
}

static void test_invalid_changes_nothing(void **state)
{
	struct fpool_pool *pool;
	struct fpool_config cfg;

	(void)state;
	assert_int_equal(dummy_pool_new(&pool, 2), 0);
	struct fpool_config was = pool->cfg;

	cfg = base_config();
	cfg.workers = 0;
	cfg.graceful_timeout = 1;
	assert_int_equal(fpool__pool_reconfigure(pool, &cfg), -EINVAL);
	assert_non_null(strstr(pool->refused, "not valid"));
	assert_unchanged(pool, &was);

	cfg = base_config();
	cfg.worker = NULL; /* neither a worker nor a module */
	assert_int_equal(fpool__pool_reconfigure(pool, &cfg), -EINVAL);
	assert_unchanged(pool, &was);
	fpool_pool_free(pool);
}

static void test_unloadable_module_changes_nothing(void **state)
{
	struct fpool_pool *pool;
	struct fpool_config cfg = base_config();

	(void)state;
	assert_int_equal(dummy_pool_new(&pool, 2), 0);
	struct fpool_config was = pool->cfg;

	cfg.worker = NULL;
	cfg.worker_module = "/nonexistent/dir/w.so";
	cfg.graceful_timeout = 7;
	cfg.workers = 3;
	assert_int_equal(fpool__pool_reconfigure(pool, &cfg), -ENOENT);
	assert_non_null(strstr(pool->refused, "/nonexistent/dir/w.so"));
	assert_non_null(strstr(pool->refused, "No such file"));
	assert_null(pool->module);
	assert_unchanged(pool, &was);
	fpool_pool_free(pool);
}

static void test_unopenable_output_changes_nothing(void **state)
{
	struct fpool_pool *pool;
	struct fpool_config cfg = base_config();

	(void)state;
	assert_int_equal(dummy_pool_new(&pool, 2), 0);
	struct fpool_config was = pool->cfg;

	cfg.stdout_file = "/nonexistent/dir/out.log";
	cfg.max_requests = 5;
	assert_int_not_equal(fpool__pool_reconfigure(pool, &cfg), 0);
	assert_non_null(strstr(pool->refused, "/nonexistent/dir/out.log"));
	assert_null(pool->out[0]);
	assert_unchanged(pool, &was);
	fpool_pool_free(pool);
}

static void test_usable_is_applied_but_fixed_settings(void **state)
{
	struct fpool_pool *pool;
	struct fpool_config cfg = base_config();
	char *argv[] = { "other", "--fast", NULL };

	(void)state;
	assert_int_equal(dummy_pool_new(&pool, 2), 0);
	cfg.worker = &other_worker;
	cfg.worker_argc = 2;
	cfg.worker_argv = argv;
	cfg.workers = 4;
	cfg.graceful_timeout = 7;
	cfg.max_requests = 100;
	cfg.max_restarts = 5;
	cfg.user = "nobody";	    /* needs a new master */
	cfg.pidfile = "/tmp/x.pid"; /* same */
	assert_int_equal(fpool__pool_reconfigure(pool, &cfg), 0);
	assert_string_equal(pool->refused, "");
	assert_ptr_equal(pool->cfg.worker, &other_worker);
	assert_ptr_equal(pool->spawn.def, &other_worker);
	assert_ptr_equal(pool->spawn.argv, argv);
	assert_int_equal(pool->spawn.argc, 2);
	assert_true(pool->spawn.graceful_timeout == 7);
	assert_int_equal(pool->cfg.max_requests, 100);
	assert_int_equal(pool->cfg.max_restarts, 5);
	assert_non_null(pool->failures);
	assert_int_equal(fpool_pool_size(pool), 4);
	assert_null(pool->cfg.user);
	assert_null(pool->cfg.pidfile);

	/* And back down. */
	cfg.workers = 1;
	assert_int_equal(fpool__pool_reconfigure(pool, &cfg), 0);
	assert_int_equal(fpool_pool_size(pool), 1);
	fpool_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_invalid_changes_nothing),
		cmocka_unit_test(test_unloadable_module_changes_nothing),
		cmocka_unit_test(test_unopenable_output_changes_nothing),
		cmocka_unit_test(test_usable_is_applied_but_fixed_settings),
	};

	fpool_log_set_level(FPOOL_LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
