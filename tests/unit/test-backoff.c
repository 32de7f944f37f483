/*
 * Unit tests for backoff.c: the wait before a slot's next start after a
 * run of failed starts (DESIGN.md, "Restart policy").
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>

#include "fpool-int.h"

static void test_backoff_table(void **state)
{
	static const struct {
		unsigned failed;
		double want;
	} cases[] = {
		{ 0, 0 },   { 1, 0 },	  { 2, 0 },	    { 3, 0.1 },
		{ 4, 0.2 }, { 5, 0.4 },	  { 6, 0.8 },	    { 7, 1.6 },
		{ 8, 3.2 }, { 9, 6.4 },	  { 10, 10 },	    { 11, 10 },
		{ 40, 10 }, { 1000, 10 }, { UINT_MAX, 10 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		double d = fpool__backoff_delay(cases[i].failed);

		/* Doubling 0.1 is exact, so each step is 0.1 * 2^k to the
		 * bit, but 0.1 * 8 need not equal the literal 0.8. */
		if (d < cases[i].want - 1e-12 || d > cases[i].want + 1e-12)
			fail_msg("failed=%u: %g, want %g", cases[i].failed, d,
				 cases[i].want);
	}
}

static void test_backoff_shape(void **state)
{
	double prev = 0;
	unsigned k;

	(void)state;
	for (k = 0; k < 10000; k++) {
		double d = fpool__backoff_delay(k);

		if (d < prev || d > 10)
			fail_msg("failed=%u: %g after %g", k, d, prev);
		/* Until the cap each further failure exactly doubles it. */
		if (prev > 0 && d < 10 && d != 2 * prev)
			fail_msg("failed=%u: %g is not twice %g", k, d, prev);
		prev = d;
	}
	assert_true(prev == 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_table),
		cmocka_unit_test(test_backoff_shape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
