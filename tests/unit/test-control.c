/*
 * Unit tests of the control protocol: one request line in, one reply line
 * out, on a pool that is not running (no process is forked).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"
#include "dummy-pool.h"

static int setup(void **state)
{
	struct fpool_pool *pool;

	assert_int_equal(dummy_pool_new(&pool, 3), 0);
	*state = pool;
	return 0;
}

static int teardown(void **state)
{
	fpool_pool_free(*state);
	return 0;
}

/* The parsed reply to `req`; *stop tells whether it asked to stop. */
static yajl_val ask(struct fpool_pool *pool, const char *req, bool *stop)
{
	struct evbuffer *out = evbuffer_new();
	bool graceful, dummy_stop;
	char err[128], *line;
	size_t n;
	yajl_val v;

	fpool__control_handle(pool, req, strlen(req), out,
			      stop ? stop : &dummy_stop, &graceful);
	n = evbuffer_get_length(out);
	assert_true(n > 0);
	line = calloc(1, n + 1);
	evbuffer_remove(out, line, n);
	evbuffer_free(out);
	/* One line, newline-terminated. */
	assert_int_equal(line[n - 1], '\n');
	assert_ptr_equal(strchr(line, '\n'), line + n - 1);
	v = yajl_tree_parse(line, err, sizeof(err));
	if (v == NULL)
		fail_msg("reply is not JSON: %s", line);
	free(line);
	return v;
}

static yajl_val at(yajl_val v, const char *a, const char *b)
{
	const char *path[] = { a, b, NULL };

	return yajl_tree_get(v, path, yajl_t_any);
}

static void expect_error(struct fpool_pool *pool, const char *req,
			 const char *id, const char *words)
{
	yajl_val v = ask(pool, req, NULL), e = at(v, "error", NULL);

	assert_true(YAJL_IS_FALSE(at(v, "ok", NULL)));
	if (id == NULL)
		assert_true(YAJL_IS_NULL(at(v, "id", NULL)));
	else
		assert_string_equal(YAJL_GET_STRING(at(v, "id", NULL)), id);
	assert_true(YAJL_IS_STRING(e));
	if (strstr(e->u.string, words) == NULL)
		fail_msg("%s: error '%s' does not say '%s'", req, e->u.string,
			 words);
	yajl_tree_free(v);
}

static void test_status(void **state)
{
	yajl_val v = ask(*state, "{\"id\":\"9f2c\",\"cmd\":\"status\"}", NULL);
	yajl_val workers = at(v, "result", "workers");

	assert_string_equal(YAJL_GET_STRING(at(v, "id", NULL)), "9f2c");
	assert_true(YAJL_IS_TRUE(at(v, "ok", NULL)));
	assert_int_equal(YAJL_GET_INTEGER(at(v, "result", "target")), 3);
	assert_int_equal(YAJL_GET_INTEGER(at(v, "result", "live")), 0);
	/* Not running: no process to list. */
	assert_true(YAJL_IS_ARRAY(workers));
	assert_int_equal(workers->u.array.len, 0);
	yajl_tree_free(v);
}

static void test_bad_requests(void **state)
{
	char big[FPOOL_CONTROL_MAX + 16];

	expect_error(*state, "{bad", NULL, "malformed JSON");
	expect_error(*state, "[1,2]", NULL, "JSON object");
	expect_error(*state, "{\"cmd\":\"status\"}", NULL, "\"id\"");
	expect_error(*state, "{\"id\":\"xyz\",\"cmd\":\"status\"}", NULL,
		     "hex");
	expect_error(*state, "{\"id\":12,\"cmd\":\"status\"}", NULL, "hex");
	expect_error(*state, "{\"id\":\"a1\"}", "a1", "\"cmd\"");
	expect_error(*state, "{\"id\":\"a1\",\"cmd\":7}", "a1", "\"cmd\"");
	expect_error(*state, "{\"id\":\"a1\",\"cmd\":\"dance\"}", "a1",
		     "unknown command");
	expect_error(*state, "{\"id\":\"a2\",\"cmd\":\"scale\"}", "a2",
		     "missing \"workers\"");
	expect_error(*state, "{\"id\":\"a2\",\"cmd\":\"scale\",\"workers\":0}",
		     "a2", "\"workers\" must be");
	expect_error(*state,
		     "{\"id\":\"a2\",\"cmd\":\"scale\",\"workers\":\"4\"}",
		     "a2", "\"workers\" must be");
	expect_error(*state, "{\"id\":\"a3\",\"cmd\":\"kill\",\"worker\":-1}",
		     "a3", "\"worker\" must be");
	expect_error(*state,
		     "{\"id\":\"a3\",\"cmd\":\"kill\",\"worker\":0,"
		     "\"signal\":\"BOGUS\"}",
		     "a3", "signal");
	expect_error(*state, "{\"id\":\"a3\",\"cmd\":\"kill\",\"worker\":0}",
		     "a3", "no such worker running");
	expect_error(*state,
		     "{\"id\":\"a4\",\"cmd\":\"stop\",\"graceful\":\"yes\"}",
		     "a4", "\"graceful\"");
	expect_error(*state, "{\"id\":\"a5\",\"cmd\":\"output\",\"worker\":99}",
		     "a5", "no such worker");
	expect_error(*state, "{\"id\":\"a6\",\"cmd\":\"reload\"}", "a6",
		     "not running");
	expect_error(*state, "\xff\xfe", NULL, "UTF-8");
	/* Deep nesting, which yajl_tree_free() would recurse through. */
	memset(big, '[', FPOOL_CONTROL_MAX - 1);
	big[FPOOL_CONTROL_MAX - 1] = '\0';
	expect_error(*state, big, NULL, "nested too deeply");
	expect_error(*state, "{\"id\":\"a7\",\"cmd\":\"st\\udc00\"}", NULL,
		     "lone surrogate");
	memset(big, ' ', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	expect_error(*state, big, NULL, "too large");
}

static void test_stop_and_output(void **state)
{
	bool stop = false;
	yajl_val v = ask(*state,
			 "{\"id\":\"b1\",\"cmd\":\"stop\",\"graceful\":false}",
			 &stop);

	assert_true(YAJL_IS_TRUE(at(v, "ok", NULL)));
	assert_true(stop);
	yajl_tree_free(v);
	v = ask(*state, "{\"id\":\"b2\",\"cmd\":\"output\",\"worker\":1}",
		&stop);
	assert_false(stop);
	assert_int_equal(YAJL_GET_INTEGER(at(v, "result", "worker")), 1);
	assert_int_equal(at(v, "result", "lines")->u.array.len, 0);
	yajl_tree_free(v);
}

static void test_signal_names(void **state)
{
	(void)state;
	assert_int_equal(fpool__signal_parse("TERM"), SIGTERM);
	assert_int_equal(fpool__signal_parse("SIGKILL"), SIGKILL);
	assert_int_equal(fpool__signal_parse("USR1"), SIGUSR1);
	assert_int_equal(fpool__signal_parse("term"), -EINVAL);
	assert_int_equal(fpool__signal_parse(""), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stop_and_output, setup,
						teardown),
		cmocka_unit_test(test_signal_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
