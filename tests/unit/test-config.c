/*
 * Unit tests for config.c: the strict duration and integer parsers that
 * every flag and config file key goes through, and the pool defaults.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fpool-int.h"

/* Stays in *out when a parser fails, to check it leaves *out alone. */
#define UNTOUCHED_D -42.0
#define UNTOUCHED_U 4242u

static void test_duration_good(void **state)
{
	static const struct {
		const char *s;
		double want;
	} cases[] = {
		{ "1", 1 },
		{ "2s", 2 },
		{ "0.25", 0.25 },
		{ "0.25s", 0.25 },
		{ "250ms", 0.25 },
		{ "1ms", 0.001 },
		{ "1.5m", 90 },
		{ "1m", 60 },
		{ "007", 7 },
		{ "30", 30 },
		{ "0.1", 0.1 },
		{ "604800", FPOOL_MAX_DURATION },
		{ "604800s", FPOOL_MAX_DURATION },
		{ "10080m", FPOOL_MAX_DURATION },
		{ "604800000ms", FPOOL_MAX_DURATION },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		double v = UNTOUCHED_D;

		int r = fpool__parse_duration(cases[i].s, &v);

		if (r != 0 || v != cases[i].want)
			fail_msg("\"%s\": %d, %g; want 0, %g", cases[i].s, r, v,
				 cases[i].want);
	}
}

static void check_duration_bad(const char *s, int want)
{
	double v = UNTOUCHED_D;
	int r = fpool__parse_duration(s, &v);

	if (r != want || v != UNTOUCHED_D)
		fail_msg("\"%s\": %d, %g; want %d, *out untouched",
			 s ? s : "(null)", r, v, want);
}

static void test_duration_malformed(void **state)
{
	static const char *const cases[] = {
		"",	 "abc",	 "-1",	  "+1",	 "1x",	 "1 ",	     " 1",
		"\t1",	 "1\n",	 "nan",	  "NaN", "inf",	 "infinity", "1e400",
		"1e3",	 "0x10", "0x1p3", "1.",	 ".5",	 ".",	     "1..2",
		"1.2.3", "s",	 "ms",	  "m",	 "1sm",	 "1 s",	     "1S",
		"1MS",	 "1h",	 "1us",	  "1,5", "1ms ",
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++)
		check_duration_bad(cases[i], -EINVAL);
	check_duration_bad(NULL, -EINVAL);
}

static void test_duration_range(void **state)
{
	static const char *const cases[] = {
		"0",
		"0.0",
		"0s",
		"0ms",
		"0m",
		"000",
		"604801",
		"604800.5",
		"10081m",
		"604800001ms",
		"99999999999999999999999999999",
		"99999999999999999999999999999ms",
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++)
		check_duration_bad(cases[i], -ERANGE);
}

static void test_uint_good(void **state)
{
	static const struct {
		const char *s;
		unsigned min, max, want;
	} cases[] = {
		{ "0", 0, 10, 0 },
		{ "10", 0, 10, 10 },
		{ "1", 1, FPOOL_MAX_WORKERS, 1 },
		{ "4096", 1, FPOOL_MAX_WORKERS, 4096 },
		{ "007", 0, 10, 7 },
		{ "65535", 0, 65535, 65535 },
		{ "4294967295", 0, UINT_MAX, UINT_MAX },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		unsigned v = UNTOUCHED_U;
		int r = fpool__parse_uint(cases[i].s, cases[i].min,
					  cases[i].max, &v);

		if (r != 0 || v != cases[i].want)
			fail_msg("\"%s\": %d, %u; want 0, %u", cases[i].s, r, v,
				 cases[i].want);
	}
}

static void check_uint_bad(const char *s, unsigned min, unsigned max, int want)
{
	unsigned v = UNTOUCHED_U;
	int r = fpool__parse_uint(s, min, max, &v);

	if (r != want || v != UNTOUCHED_U)
		fail_msg("\"%s\" in [%u, %u]: %d, %u; want %d, *out untouched",
			 s ? s : "(null)", min, max, r, v, want);
}

static void test_uint_bad(void **state)
{
	static const char *const malformed[] = {
		"",
		"-1",
		"+1",
		" 1",
		"1 ",
		"1.0",
		"0x10",
		"abc",
		"1e3",
		"1k",
		"99999999999999999999999x",
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(malformed); i++)
		check_uint_bad(malformed[i], 0, UINT_MAX, -EINVAL);
	check_uint_bad(NULL, 0, 10, -EINVAL);

	check_uint_bad("11", 0, 10, -ERANGE);
	check_uint_bad("0", 1, 10, -ERANGE);
	check_uint_bad("4097", 1, FPOOL_MAX_WORKERS, -ERANGE);
	check_uint_bad("65536", 0, 65535, -ERANGE);
	check_uint_bad("4294967296", 0, UINT_MAX, -ERANGE);
	check_uint_bad("18446744073709551616", 0, UINT_MAX, -ERANGE);
	check_uint_bad("99999999999999999999999", 0, UINT_MAX, -ERANGE);
}

static void test_config_defaults(void **state)
{
	struct fpool_config cfg;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want;

	(void)state;
	if (ncpu < 1)
		want = 1;
	else if (ncpu > FPOOL_MAX_WORKERS)
		want = FPOOL_MAX_WORKERS;
	else
		want = (unsigned)ncpu;

	memset(&cfg, 0xa5, sizeof(cfg));
	fpool_config_init(&cfg);
	assert_int_equal(cfg.workers, want);
	assert_in_range(cfg.workers, 1, FPOOL_MAX_WORKERS);
	assert_true(cfg.worker_timeout == 30);
	assert_true(cfg.graceful_timeout == 30);
	assert_true(cfg.check_interval == 1);
	assert_true(cfg.min_uptime == 1);
	assert_null(cfg.worker);
	assert_int_equal(cfg.worker_argc, 0);
	assert_null(cfg.worker_argv);
}

static int dummy_main(struct fpool_worker *w, void *arg)
{
	(void)w;
	(void)arg;
	return 0;
}

static const struct fpool_worker_def dummy = { .name = "dummy",
					       .main = dummy_main };

/* The struct as the header before reap_all declared it: a program built
 * against that header passes this size. */
#define OLD_SIZE offsetof(struct fpool_config, reap_all)

/* Our struct with room around it, filled with a pattern. */
union buf {
	struct fpool_config cfg;
	unsigned char b[sizeof(struct fpool_config) + 64];
};

static void test_config_older_header(void **state)
{
	union buf u;
	struct fpool_pool *pool;

	(void)state;
	/* A version's fields end where its sizeof does (no tail padding
	 * for a later field to fall into). */
	assert_int_equal(OLD_SIZE % sizeof(void *), 0);
	memset(&u, 0x5a, sizeof(u));
	fpool_config_init_size(&u.cfg, OLD_SIZE);
	/* Nothing past the caller's struct was written. */
	for (size_t i = OLD_SIZE; i < sizeof(u); i++)
		assert_int_equal(u.b[i], 0x5a);
	assert_int_equal(u.cfg.struct_size, OLD_SIZE);
	assert_true(u.cfg.graceful_timeout == 30);
	assert_int_equal(u.cfg.exec_stop_signal, 0);
	u.cfg.worker = &dummy;
	u.cfg.workers = 2;
	/* The bytes where reap_all would be hold 0x5a...: the library
	 * takes its default, not them. */
	assert_int_equal(fpool_pool_new(&pool, &u.cfg), 0);
	assert_int_equal(pool->cfg.struct_size, sizeof(struct fpool_config));
	assert_int_equal(pool->cfg.workers, 2);
	assert_int_equal(pool->cfg.reap_all, 0);
	assert_ptr_equal(pool->cfg.worker, &dummy);
	fpool_pool_free(pool);
}

static void test_config_newer_header(void **state)
{
	const size_t big = sizeof(struct fpool_config) + 16;
	union buf u;
	struct fpool_pool *pool;
	int r;

	(void)state;
	memset(&u, 0x5a, sizeof(u));
	fpool_config_init_size(&u.cfg, big);
	assert_int_equal(u.cfg.struct_size, big);
	/* The fields this library does not know start at 0... */
	for (size_t i = sizeof(struct fpool_config); i < big; i++)
		assert_int_equal(u.b[i], 0);
	/* ...and nothing past the caller's size is touched. */
	for (size_t i = big; i < sizeof(u); i++)
		assert_int_equal(u.b[i], 0x5a);
	u.cfg.worker = &dummy;
	u.cfg.workers = 1;
	/* Left at 0, they are the defaults: accepted. */
	assert_int_equal(fpool_pool_new(&pool, &u.cfg), 0);
	assert_int_equal(pool->cfg.struct_size, sizeof(struct fpool_config));
	fpool_pool_free(pool);
	/* Set, they would be dropped: refused, and the text says why. */
	u.b[big - 1] = 1;
	r = fpool_pool_new(&pool, &u.cfg);
	assert_int_equal(r, -E2BIG);
	assert_null(pool);
	assert_non_null(strstr(fpool_strerror(r), "newer forkpool.h"));
}

static void test_config_not_initialised(void **state)
{
	struct fpool_config cfg;
	struct fpool_pool *pool;

	(void)state;
	fpool_config_init(&cfg);
	cfg.worker = &dummy;
	cfg.struct_size = 0;
	assert_int_equal(fpool_pool_new(&pool, &cfg), -EINVAL);
}

static void test_version(void **state)
{
	char want[32];

	(void)state;
	snprintf(want, sizeof(want), "%d.%d.%d", FPOOL_VERSION_MAJOR,
		 FPOOL_VERSION_MINOR, FPOOL_VERSION_PATCH);
	assert_string_equal(FPOOL_VERSION, want);
	assert_string_equal(fpool_version(), FPOOL_VERSION);
	assert_int_equal(FPOOL_VERSION_HEX, FPOOL_VERSION_MAJOR * 65536 +
						    FPOOL_VERSION_MINOR * 256 +
						    FPOOL_VERSION_PATCH);
	assert_int_equal(fpool_abi_version(), FPOOL_ABI_VERSION);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration_good),
		cmocka_unit_test(test_duration_malformed),
		cmocka_unit_test(test_duration_range),
		cmocka_unit_test(test_uint_good),
		cmocka_unit_test(test_uint_bad),
		cmocka_unit_test(test_config_defaults),
		cmocka_unit_test(test_config_older_header),
		cmocka_unit_test(test_config_newer_header),
		cmocka_unit_test(test_config_not_initialised),
		cmocka_unit_test(test_version),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
