/*
 * Unit tests of the command line: defaults, every flag, worker arguments
 * after --, and the one-line usage errors (exit status 2).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fpool-int.h"

#define PARSE(o, err, ...)                                                \
	({                                                                \
		char *argv_[] = { "forkpool", __VA_ARGS__, NULL };        \
		fpool__cli_parse((int)FPOOL_NELEM(argv_) - 1, argv_, (o), \
				 (err), sizeof(err));                     \
	})

static void test_defaults(void **state)
{
	struct fpool_cli o;
	char err[256];
	char *argv[] = { "forkpool", NULL };

	(void)state;
	assert_int_equal(fpool__cli_parse(1, argv, &o, err, sizeof(err)), 0);
	assert_true(o.cfg.workers >= 1);
	assert_int_equal(o.nbinds, 1);
	assert_string_equal(o.binds[0], "127.0.0.1:8080");
	assert_string_equal(o.worker, "echo");
	assert_true(o.cfg.worker_timeout == 30.0);
	assert_true(o.cfg.graceful_timeout == 30.0);
	assert_true(o.cfg.check_interval == 1.0);
	assert_int_equal(o.log_level, FPOOL_LOG_INFO);
	assert_int_equal(o.worker_argc, 1);
	assert_string_equal(o.worker_argv[0], "echo");
	assert_null(o.worker_argv[1]);
	fpool__cli_free(&o);
}

static void test_every_flag(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "-w", "3", "--bind", "[::1]:9000", "-b",
			       "unix:/tmp/x.sock", "-k", "./w.so",
			       "--worker-timeout", "2.5", "--graceful-timeout",
			       "250ms", "--check-interval", "0.1",
			       "--min-uptime", "2s", "--log-level", "debug",
			       "--", "--hang-after", "5"),
			 0);
	assert_int_equal(o.cfg.workers, 3);
	assert_int_equal(o.nbinds, 2);
	assert_string_equal(o.binds[0], "[::1]:9000");
	assert_string_equal(o.binds[1], "unix:/tmp/x.sock");
	assert_string_equal(o.worker, "./w.so");
	assert_true(o.cfg.worker_timeout == 2.5);
	assert_true(o.cfg.graceful_timeout == 0.25);
	assert_true(o.cfg.check_interval == 0.1);
	assert_true(o.cfg.min_uptime == 2.0);
	assert_int_equal(o.log_level, FPOOL_LOG_DEBUG);
	assert_int_equal(o.worker_argc, 3);
	assert_string_equal(o.worker_argv[0], "./w.so");
	assert_string_equal(o.worker_argv[1], "--hang-after");
	assert_string_equal(o.worker_argv[2], "5");
	assert_null(o.worker_argv[3]);
	assert_int_equal(o.cfg.worker_argc, 3);
	assert_ptr_equal(o.cfg.worker_argv, o.worker_argv);
	fpool__cli_free(&o);
}

static void test_help_version(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--help"), 0);
	assert_true(o.help);
	fpool__cli_free(&o);
	assert_int_equal(PARSE(&o, err, "-V"), 0);
	assert_true(o.version);
	fpool__cli_free(&o);
}

/* Each bad command line is a usage error whose message names the flag. */
static void test_usage_errors(void **state)
{
	static const struct {
		const char *flag, *value, *named;
	} bad[] = {
		{ "-w", "0", "--workers" },
		{ "-w", "-1", "--workers" },
		{ "-w", "abc", "--workers" },
		{ "-w", "99999999", "--workers" },
		{ "--workers", "", "--workers" },
		{ "-b", "127.0.0.1", "--bind" },
		{ "-b", "127.0.0.1:99999", "--bind" },
		{ "--bind", "example.com:80", "--bind" },
		{ "--worker-timeout", "0", "--worker-timeout" },
		{ "--worker-timeout", "abc", "--worker-timeout" },
		{ "--graceful-timeout", "-1", "--graceful-timeout" },
		{ "--check-interval", "1x", "--check-interval" },
		{ "--min-uptime", "nan", "--min-uptime" },
		{ "--log-level", "loud", "--log-level" },
		{ "-k", "", "--worker" },
	};
	struct fpool_cli o;
	char err[256];

	(void)state;
	for (size_t i = 0; i < FPOOL_NELEM(bad); i++) {
		char *argv[] = { "forkpool", (char *)bad[i].flag,
				 (char *)bad[i].value, NULL };

		assert_int_equal(
			fpool__cli_parse(3, argv, &o, err, sizeof(err)), 2);
		if (strstr(err, bad[i].named) == NULL)
			fail_msg("%s %s: message '%s' does not name %s",
				 bad[i].flag, bad[i].value, err, bad[i].named);
		assert_null(strchr(err, '\n'));
	}
}

static void test_unknown_and_missing(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--frobnicate"), 2);
	assert_non_null(strstr(err, "--frobnicate"));
	assert_int_equal(PARSE(&o, err, "-z"), 2);
	assert_non_null(strstr(err, "-z"));
	assert_int_equal(PARSE(&o, err, "--workers"), 2);
	assert_non_null(strstr(err, "--workers"));
	assert_int_equal(PARSE(&o, err, "stray"), 2);
	assert_non_null(strstr(err, "stray"));
}

static void test_module_lookup(void **state)
{
	const struct fpool_worker_def *def;
	void *handle;
	char err[256];

	(void)state;
	assert_int_equal(
		fpool__module_find("echo", &def, &handle, err, sizeof(err)), 0);
	assert_string_equal(def->name, "echo");
	assert_null(handle);
	assert_int_equal(
		fpool__module_find("nope", &def, &handle, err, sizeof(err)),
		-ENOENT);
	assert_non_null(strstr(err, "--worker"));
	assert_int_equal(fpool__module_find("/nonexistent/w.so", &def, &handle,
					    err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/w.so"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_flag),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_unknown_and_missing),
		cmocka_unit_test(test_module_lookup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
