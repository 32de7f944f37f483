/*
 * Unit tests of the output pieces: the line splitter (partial lines, long
 * lines beyond its buffer, empty lines) and the ring of last lines.
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

/* The lines a splitter handed out, joined with '|'. */
struct seen {
	char text[4 * FPOOL_LINE_MAX];
	size_t len;
	size_t nlines;
	size_t longest;
};

static void collect(const char *line, size_t len, void *arg)
{
	struct seen *s = arg;

	assert_true(s->len + len + 1 < sizeof(s->text));
	memcpy(s->text + s->len, line, len);
	s->len += len;
	s->text[s->len++] = '|';
	s->text[s->len] = '\0';
	s->nlines++;
	if (len > s->longest)
		s->longest = len;
}

static void feed(struct fpool__linebuf *lb, struct seen *s, const char *data)
{
	assert_int_equal(
		fpool__linebuf_feed(lb, data, strlen(data), collect, s), 0);
}

static void test_whole_lines(void **state)
{
	struct fpool__linebuf lb = { 0 };
	struct seen s = { 0 };

	(void)state;
	feed(&lb, &s, "one\ntwo\nthree\n");
	assert_string_equal(s.text, "one|two|three|");
	fpool__linebuf_flush(&lb, collect, &s);
	assert_int_equal(s.nlines, 3); /* nothing left over */
	fpool__linebuf_free(&lb);
}

static void test_partial_lines(void **state)
{
	struct fpool__linebuf lb = { 0 };
	struct seen s = { 0 };

	(void)state;
	feed(&lb, &s, "hel");
	assert_int_equal(s.nlines, 0);
	feed(&lb, &s, "lo wor");
	feed(&lb, &s, "ld\nsecond");
	assert_string_equal(s.text, "hello world|");
	feed(&lb, &s, " half\nno newline at the end");
	assert_string_equal(s.text, "hello world|second half|");
	fpool__linebuf_flush(&lb, collect, &s);
	assert_string_equal(s.text,
			    "hello world|second half|no newline at the end|");
	/* A flush with nothing pending hands out nothing. */
	fpool__linebuf_flush(&lb, collect, &s);
	assert_int_equal(s.nlines, 3);
	fpool__linebuf_free(&lb);
}

static void test_empty_lines(void **state)
{
	struct fpool__linebuf lb = { 0 };
	struct seen s = { 0 };

	(void)state;
	feed(&lb, &s, "\n\na\n\n");
	assert_string_equal(s.text, "||a||");
	assert_int_equal(s.nlines, 4);
	fpool__linebuf_free(&lb);
}

static void test_one_byte_at_a_time(void **state)
{
	const char *in = "ab\n\ncd\nef";
	struct fpool__linebuf lb = { 0 };
	struct seen s = { 0 };

	(void)state;
	for (const char *p = in; *p; p++)
		assert_int_equal(fpool__linebuf_feed(&lb, p, 1, collect, &s),
				 0);
	fpool__linebuf_flush(&lb, collect, &s);
	assert_string_equal(s.text, "ab||cd|ef|");
	fpool__linebuf_free(&lb);
}

/* A line longer than the buffer is cut into FPOOL_LINE_MAX pieces; no
 * byte is lost and the next line is whole. */
static void test_long_line(void **state)
{
	size_t n = 2 * FPOOL_LINE_MAX + 100;
	char *big = malloc(n + 8);
	struct fpool__linebuf lb = { 0 };
	struct seen *s = calloc(1, sizeof(*s));

	(void)state;
	assert_non_null(big);
	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	memcpy(big + n, "\nnext\n", 7);
	/* Fed in two uneven parts, so the cut falls inside the buffer. */
	assert_int_equal(fpool__linebuf_feed(&lb, big, 1000, collect, s), 0);
	assert_int_equal(
		fpool__linebuf_feed(&lb, big + 1000, n + 6 - 1000, collect, s),
		0);
	assert_int_equal(s->nlines, 4);
	assert_int_equal(s->longest, FPOOL_LINE_MAX);
	/* The pieces joined give back the line, then "next". */
	assert_int_equal(s->len, n + 3 + 5);
	for (size_t i = 0, j = 0; i < n; j++) {
		if (s->text[j] == '|')
			continue;
		assert_int_equal(s->text[j], big[i]);
		i++;
	}
	assert_string_equal(s->text + s->len - 5, "next|");
	fpool__linebuf_free(&lb);
	free(big);
	free(s);
}

/* A line of exactly FPOOL_LINE_MAX bytes is one line, whether or not its
 * newline comes in the same read (found by fuzz-linebuf). */
static void test_max_line_split_before_newline(void **state)
{
	char *big = malloc(FPOOL_LINE_MAX);
	struct fpool__linebuf lb = { 0 };
	struct seen *s = calloc(1, sizeof(*s));

	(void)state;
	assert_non_null(big);
	assert_non_null(s);
	memset(big, 'x', FPOOL_LINE_MAX);
	assert_int_equal(
		fpool__linebuf_feed(&lb, big, FPOOL_LINE_MAX, collect, s), 0);
	feed(&lb, s, "\nnext\n");
	assert_int_equal(s->nlines, 2);
	assert_int_equal(s->longest, FPOOL_LINE_MAX);
	assert_string_equal(s->text + s->len - 5, "next|");
	fpool__linebuf_free(&lb);
	free(big);
	free(s);
}

/* A slot keeps a bounded number of bytes: long lines are cut with a
 * marker, old lines go to make room, and a line keeps its NULs. */
static void test_ring_bytes(void **state)
{
	struct fpool__ring r;
	char *big = malloc(16384);
	const char *got;
	size_t len, total = 0;

	(void)state;
	assert_non_null(big);
	memset(big, 'x', 16384);
	fpool__ring_init(&r, 200);
	for (int i = 0; i < 100; i++)
		assert_int_equal(fpool__ring_push(&r, big, 16384), 0);
	assert_true(r.n < 100);
	for (size_t i = 0; (got = fpool__ring_get(&r, i, &len)) != NULL; i++) {
		assert_true(len <= FPOOL_RING_LINE);
		assert_non_null(strstr(got, " [... "));
		assert_string_equal(got + len - strlen(" bytes cut]"),
				    " bytes cut]");
		total += len + 1;
	}
	assert_true(total <= FPOOL_RING_BYTES);
	assert_int_equal(total, r.bytes);
	/* A short line after them is kept whole, NUL and all. */
	assert_int_equal(fpool__ring_push(&r, "a\0b", 3), 0);
	got = fpool__ring_get(&r, r.n - 1, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(got, "a\0b", 3);
	fpool__ring_free(&r);
	free(big);
}

static void test_ring(void **state)
{
	struct fpool__ring r;
	char line[16];

	(void)state;
	fpool__ring_init(&r, 3);
	assert_null(fpool__ring_get(&r, 0, NULL));
	assert_int_equal(fpool__ring_push(&r, "a", 1), 0);
	assert_int_equal(fpool__ring_push(&r, "bc", 2), 0);
	assert_string_equal(fpool__ring_get(&r, 0, NULL), "a");
	assert_string_equal(fpool__ring_get(&r, 1, NULL), "bc");
	assert_null(fpool__ring_get(&r, 2, NULL));
	for (int i = 0; i < 10; i++) {
		snprintf(line, sizeof(line), "line %d", i);
		assert_int_equal(fpool__ring_push(&r, line, strlen(line)), 0);
	}
	/* Only the last three remain, oldest first. */
	assert_string_equal(fpool__ring_get(&r, 0, NULL), "line 7");
	assert_string_equal(fpool__ring_get(&r, 1, NULL), "line 8");
	assert_string_equal(fpool__ring_get(&r, 2, NULL), "line 9");
	assert_null(fpool__ring_get(&r, 3, NULL));
	/* A line is copied up to its length, NUL-terminated. */
	assert_int_equal(fpool__ring_push(&r, "xyz", 2), 0);
	assert_string_equal(fpool__ring_get(&r, 2, NULL), "xy");
	fpool__ring_free(&r);
	/* Freed, it is empty and keeps lines again. */
	assert_null(fpool__ring_get(&r, 0, NULL));
	assert_int_equal(fpool__ring_push(&r, "again", 5), 0);
	assert_string_equal(fpool__ring_get(&r, 0, NULL), "again");
	assert_null(fpool__ring_get(&r, 1, NULL));
	fpool__ring_free(&r);

	/* A ring of size 0 keeps nothing and does not fail. */
	fpool__ring_init(&r, 0);
	assert_int_equal(fpool__ring_push(&r, "a", 1), 0);
	assert_null(fpool__ring_get(&r, 0, NULL));
	fpool__ring_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_lines),
		cmocka_unit_test(test_partial_lines),
		cmocka_unit_test(test_empty_lines),
		cmocka_unit_test(test_one_byte_at_a_time),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_max_line_split_before_newline),
		cmocka_unit_test(test_ring),
		cmocka_unit_test(test_ring_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
