/*
 * Unit tests for json.c's fpool_json_check(): the check of JSON text
 * before yajl_tree_parse() sees it, shared by the channel, the control
 * socket and the jsonrpc worker.  Text it passes must parse into a tree
 * whose strings are well-formed UTF-8 and the value sent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

#define TXT(s) s, sizeof(s) - 1

struct check_case {
	const char *s;
	size_t len;
	unsigned flags;
	const char *why; /* NULL: passed; else a part of the reason */
};

static void expect(const struct check_case *c, size_t i)
{
	const char *why = fpool_json_check(c->s, c->len, 8, c->flags);

	if (c->why == NULL && why != NULL)
		fail_msg("case %zu: refused (%s)", i, why);
	if (c->why != NULL && (why == NULL || strstr(why, c->why) == NULL))
		fail_msg("case %zu: want \"%s\", got %s", i, c->why,
			 why != NULL ? why : "a pass");
}

static void test_refused(void **state)
{
	static const struct check_case cases[] = {
		{ TXT("{\"a\":\"x\0y\"}"), 0, "NUL" },
		{ TXT("\0{}"), 0, "NUL" },
		{ TXT("{\"a\":\"\xff\"}"), 0, "UTF-8" },
		{ TXT("{\"a\":\"\xc0\xaf\"}"), 0, "UTF-8" },	 /* overlong */
		{ TXT("{\"a\":\"\xed\xa0\x80\"}"), 0, "UTF-8" }, /* surrogate */
		{ TXT("{\"a\":\"\xf4\x90\x80\x80\"}"), 0, "UTF-8" },
		{ TXT("{\"a\":\"\xe2\x82\"}"), 0, "UTF-8" }, /* cut short */
		{ TXT("[[[[[[[[[]]]]]]]]]"), 0, "nested too deeply" },
		{ TXT("{\"a\":[{\"b\":[{\"c\":[{\"d\":[[1]]}]}]}]}"), 0,
		  "nested too deeply" },
		{ TXT("{\"a\":\"b\\u0000c\"}"), 0, "\\u0000" },
		{ TXT("{\"a\\u0000b\":1}"), 0, "\\u0000" },
		{ TXT("\"\\ud800\""), 0, "lone surrogate" },
		{ TXT("\"\\udc00\""), 0, "lone surrogate" },
		{ TXT("\"\\uD83Dx\""), 0, "lone surrogate" },
		{ TXT("\"\\ud800\\u0041\""), 0, "lone surrogate" },
		{ TXT("\"\\ud83d\\ud83d\""), 0, "lone surrogate" },
		{ TXT("\"\\ude00\\ud83d\""), 0, "lone surrogate" },
		{ TXT("\"\\ud83d\\n\""), 0, "lone surrogate" },
		{ TXT("[\"ok\",\"x\\udbff\"]"), 0, "lone surrogate" },
		{ TXT("{\"\\udc00\":1}"), 0, "lone surrogate" },
		{ TXT("/* c */{}"), FPOOL_JSON_NO_COMMENTS, "comment" },
		{ TXT("{}// c"), FPOOL_JSON_NO_COMMENTS, "comment" },
	};

	(void)state;
	for (size_t i = 0; i < FPOOL_NELEM(cases); i++)
		expect(&cases[i], i);
}

static void test_passed(void **state)
{
	static const struct check_case cases[] = {
		{ TXT("{}"), 0, NULL },
		{ TXT("[[[[[[[[]]]]]]]]"), 0, NULL }, /* 8 levels: the limit */
		{ TXT("\"[[[[[[[[[[[[[[[[\""), 0, NULL }, /* in a string */
		{ TXT("{\"a\":\"\\\"[[[[[[[[[[\"}"), 0, NULL },
		{ TXT("\"\\\\u0000\""), 0, NULL }, /* "\\" then "u0000" */
		{ TXT("\"\\\\ud800\\\\\""), 0, NULL },
		{ TXT("\"\\ud83d\\ude00\\uDBFF\\uDFFF\""), 0, NULL },
		{ TXT("\"\\u00e9\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""), 0,
		  NULL },
		/* Comments are skipped, brackets and quotes in them too. */
		{ TXT("/* [[[[[[[[[[ \" */ {\"a\":1}"), 0, NULL },
		{ TXT("{\"a\":1} // [[[[[[[[[[[[[[[[[[\n"), 0, NULL },
		{ TXT("[1, // [[[[[[[[[[\n 2]"), 0, NULL },
		/* Not JSON: the parser's to say. */
		{ TXT("{bad"), 0, NULL },
		{ TXT("\"\\u00"), 0, NULL },
		{ TXT("\"\\"), 0, NULL },
		{ TXT("/"), 0, NULL },
		{ TXT("]]]]]]]]]][[[[[[[["), 0, NULL },
		{ TXT(""), 0, NULL },
	};

	(void)state;
	for (size_t i = 0; i < FPOOL_NELEM(cases); i++)
		expect(&cases[i], i);
}

/* What passes parses into the value sent: a pair is one character, in
 * well-formed UTF-8. */
static void test_passed_text_parses_as_sent(void **state)
{
	static const char text[] = "{\"k\\u00e9\":\"a\\ud83d\\ude00\\u0041\"}";
	yajl_val v;

	(void)state;
	assert_null(fpool_json_check(text, strlen(text), 8, 0));
	v = yajl_tree_parse(text, NULL, 0);
	assert_non_null(v);
	assert_true(YAJL_IS_OBJECT(v) && v->u.object.len == 1);
	assert_string_equal(v->u.object.keys[0], "k\xc3\xa9");
	assert_string_equal(v->u.object.values[0]->u.string, "a\xf0\x9f\x98\x80"
							     "A");
	yajl_tree_free(v);
}

/* A megabyte of "[" is refused at the limit, in one pass. */
static void test_deep_input_is_refused_not_parsed(void **state)
{
	size_t n = 1 << 20;
	char *s = malloc(n);

	(void)state;
	assert_non_null(s);
	memset(s, '[', n);
	assert_non_null(strstr(fpool_json_check(s, n, 100, 0), "deeply"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_passed),
		cmocka_unit_test(test_passed_text_parses_as_sent),
		cmocka_unit_test(test_deep_input_is_refused_not_parsed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
