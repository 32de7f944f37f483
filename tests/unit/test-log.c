/*
 * Unit tests of log records: the text and JSON forms the master writes,
 * bytes made valid UTF-8, and a record's round trip through the channel
 * (encode in the worker, decode in the master).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

/* The record's line as the sink (text or JSON) writes it. */
static char *line_of(const struct fpool__record *r, bool json)
{
	struct evbuffer *b = evbuffer_new();
	size_t n;
	char *s;

	assert_non_null(b);
	if (json)
		assert_int_equal(fpool__record_json(r, b), 0);
	else
		assert_int_equal(fpool__record_format(r, b), 0);
	n = evbuffer_get_length(b);
	s = malloc(n + 1);
	assert_non_null(s);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static const char *str_at(yajl_val root, const char *key)
{
	const char *path[] = { key, NULL };
	yajl_val v = yajl_tree_get(root, path, yajl_t_string);

	return v ? YAJL_GET_STRING(v) : NULL;
}

static void test_text_record(void **state)
{
	struct fpool_log_field f[] = {
		{ "seq", "42" },
		{ "path", "a b" },
		{ "quote", "say \"hi\"" },
		{ "empty", "" },
	};
	struct fpool__record r = {
		.time = 1795304772.357857,
		.level = FPOOL_LOG_WARNING,
		.worker = 2,
		.pid = 4711,
		.msg = "disk is full",
		.msglen = 12,
		.fields = f,
		.nfields = 4,
	};
	char *s;

	(void)state;
	s = line_of(&r, false);
	assert_string_equal(s, "2026-11-21T23:46:12.357857Z warning worker 2 "
			       "pid 4711: disk is full seq=42 path=\"a b\" "
			       "quote=\"say \\\"hi\\\"\" empty=\"\"\n");
	free(s);

	r.worker = -1;
	r.nfields = 0;
	r.level = FPOOL_LOG_INFO;
	s = line_of(&r, false);
	assert_string_equal(s, "2026-11-21T23:46:12.357857Z info master: disk "
			       "is full\n");
	free(s);
}

static void test_text_output_line(void **state)
{
	struct fpool__record r = {
		.worker = 3,
		.pid = 99,
		.stream = "stderr",
		.msg = "raw\tbytes",
		.msglen = 9,
	};
	char *s;

	(void)state;
	s = line_of(&r, false);
	assert_string_equal(s, "[worker 3 pid 99] raw\tbytes\n");
	free(s);
}

/* Every byte a worker may print gives one line of valid JSON. */
static void test_json_any_bytes(void **state)
{
	char raw[64], err[128];
	size_t n = 0;
	struct fpool_log_field f[] = { { "k\xff", "v\x01" } };
	struct fpool__record r = {
		.time = 1.5,
		.level = FPOOL_LOG_INFO,
		.worker = 1,
		.pid = 7,
		.stream = "stdout",
		.fields = f,
		.nfields = 1,
	};
	yajl_val root;
	const char *msg;
	char *s;

	(void)state;
	for (int c = 1; c < 0x20; c++)
		raw[n++] = (char)c;
	raw[n++] = 0;
	memcpy(raw + n,
	       "\x80\xff\xc3\x28\xed\xa0\x80"
	       "end",
	       10);
	n += 10;
	r.msg = raw;
	r.msglen = n;
	s = line_of(&r, true);
	assert_non_null(strchr(s, '\n'));
	assert_true(strchr(s, '\n') == s + strlen(s) - 1); /* one line */
	root = yajl_tree_parse(s, err, sizeof(err));
	if (root == NULL)
		fail_msg("not JSON (%s): %s", err, s);
	assert_string_equal(str_at(root, "origin"), "worker");
	assert_string_equal(str_at(root, "stream"), "stdout");
	assert_string_equal(str_at(root, "level"), "info");
	assert_string_equal(str_at(root, "time"),
			    "1970-01-01T00:00:01.500000Z");
	msg = str_at(root, "msg");
	assert_non_null(msg);
	/* Control characters survive (escaped in the JSON text), the NUL
	 * too (yajl_tree hands the string back cut there); the invalid
	 * bytes became U+FFFD. */
	assert_int_equal(msg[0], 1);
	assert_int_equal(msg[30], 0x1f);
	assert_int_equal(strlen(msg), 31);
	assert_non_null(strstr(s, "\\u0000\xef\xbf\xbd\xef\xbf\xbd"));
	assert_non_null(strstr(s, "end\""));
	yajl_tree_free(root);
	free(s);
}

static void test_json_master_record(void **state)
{
	struct fpool_log_field f[] = { { "seq", "1" } };
	struct fpool__record r = {
		.time = 0,
		.level = FPOOL_LOG_ERROR,
		.worker = -1,
		.pid = 1,
		.msg = "boom \"x\"",
		.msglen = 8,
		.fields = f,
		.nfields = 1,
	};
	const char *path[] = { "fields", "seq", NULL };
	const char *wpath[] = { "worker", NULL };
	yajl_val root, v;
	char *s;

	(void)state;
	s = line_of(&r, true);
	root = yajl_tree_parse(s, NULL, 0);
	assert_non_null(root);
	assert_string_equal(str_at(root, "origin"), "master");
	assert_string_equal(str_at(root, "msg"), "boom \"x\"");
	assert_null(yajl_tree_get(root, wpath, yajl_t_any));
	v = yajl_tree_get(root, path, yajl_t_string);
	assert_non_null(v);
	assert_string_equal(YAJL_GET_STRING(v), "1");
	yajl_tree_free(root);
	free(s);
}

static void test_sanitize(void **state)
{
	size_t n;
	char *s;

	(void)state;
	s = fpool__utf8_sanitize("ok \xc3\xa9", 5, false, &n);
	assert_string_equal(s, "ok \xc3\xa9"); /* valid stays as it is */
	assert_int_equal(n, 5);
	free(s);
	s = fpool__utf8_sanitize("a\0b\xff", 4, false, &n);
	assert_string_equal(s, "a\xef\xbf\xbd"
			       "b\xef\xbf\xbd");
	assert_int_equal(n, 8);
	free(s);
	/* For JSON, which escapes it, a NUL may stay. */
	s = fpool__utf8_sanitize("a\0b\xff", 4, true, &n);
	assert_int_equal(n, 6);
	assert_memory_equal(s, "a\0b\xef\xbf\xbd", 6);
	free(s);
	/* A truncated sequence at the end. */
	s = fpool__utf8_sanitize("\xe2\x82", 2, false, &n);
	assert_string_equal(s, "\xef\xbf\xbd\xef\xbf\xbd");
	free(s);
}

/* A log record goes through a real channel and comes back the same. */
static void test_channel_round_trip(void **state)
{
	struct fpool_log_field f[] = { { "seq", "7" }, { "k", "v w" } };
	struct fpool__msg m = {
		.type = FPOOL_MSG_LOG,
		.level = FPOOL_LOG_WARNING,
		.time = 1795304772.25,
		.text = "hello \xc3\xa9 \"quoted\"\n",
		.fields = f,
		.nfields = 2,
	};
	struct fpool__msg back = { 0 };
	char buf[FPOOL_CHAN_MAX];
	int sv[2];
	ssize_t n;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	assert_int_equal(fpool__msg_send(sv[0], &m, true), 0);
	n = recv(sv[1], buf, sizeof(buf), 0);
	assert_true(n > 0);
	assert_int_equal(fpool__msg_decode(buf, (size_t)n, &back), 0);
	assert_int_equal(back.type, FPOOL_MSG_LOG);
	assert_int_equal(back.level, FPOOL_LOG_WARNING);
	assert_true(back.time > 1795304772.24 && back.time < 1795304772.26);
	assert_string_equal(back.text, m.text);
	assert_int_equal(back.nfields, 2);
	assert_string_equal(back.fields[0].key, "seq");
	assert_string_equal(back.fields[0].value, "7");
	assert_string_equal(back.fields[1].key, "k");
	assert_string_equal(back.fields[1].value, "v w");
	fpool__msg_clear(&back);
	assert_null(back.text);
	close(sv[0]);
	close(sv[1]);
}

static void test_channel_bad_log(void **state)
{
	static const char *const bad[] = {
		"{\"type\":\"log\"}",
		"{\"type\":\"log\",\"level\":\"loud\",\"time\":1,\"msg\":"
		"\"x\"}",
		"{\"type\":\"log\",\"level\":\"info\",\"time\":\"1\",\"msg\":"
		"\"x\"}",
		"{\"type\":\"log\",\"level\":\"info\",\"time\":1,\"msg\":1}",
		"{\"type\":\"log\",\"level\":\"info\",\"time\":1,\"msg\":\"x\","
		"\"fields\":[]}",
		"{\"type\":\"log\",\"level\":\"info\",\"time\":1,\"msg\":\"x\","
		"\"fields\":{\"a\":1}}",
		/* Times the encoder could not write back (fuzz-channel). */
		"{\"type\":\"log\",\"level\":\"info\",\"time\":1e29,"
		"\"msg\":\"x\"}",
		"{\"type\":\"log\",\"level\":\"info\",\"time\":-1,\"msg\":"
		"\"x\"}",
	};
	struct fpool__msg m = { 0 };

	(void)state;
	for (size_t i = 0; i < FPOOL_NELEM(bad); i++)
		if (fpool__msg_decode(bad[i], strlen(bad[i]), &m) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
	/* Invalid UTF-8 is refused when encoding, too. */
	m.type = FPOOL_MSG_LOG;
	m.text = "\xff";
	assert_int_equal(
		fpool__msg_encode(&m, (char[64]){ 0 }, 64, &(size_t){ 0 }),
		-EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_record),
		cmocka_unit_test(test_text_output_line),
		cmocka_unit_test(test_json_any_bytes),
		cmocka_unit_test(test_json_master_record),
		cmocka_unit_test(test_sanitize),
		cmocka_unit_test(test_channel_round_trip),
		cmocka_unit_test(test_channel_bad_log),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
