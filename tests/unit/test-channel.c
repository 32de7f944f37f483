/*
 * Unit tests for channel.c: the JSON messages between master and worker,
 * their exact wire form, refusal of every kind of malformed packet, and
 * sending them through a real SOCK_SEQPACKET socketpair.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fpool-int.h"

/* A packet given as a C string literal, which may hold NUL bytes. */
struct pkt {
	const char *buf;
	size_t len;
};
#define PKT(s)                   \
	{                        \
		s, sizeof(s) - 1 \
	}

/* Decode must leave *m alone on failure. */
static const struct fpool__msg untouched = {
	.type = FPOOL_MSG_HEARTBEAT,
	.requests = 0x5a5a5a5a,
};

static void assert_untouched(const struct fpool__msg *m)
{
	assert_int_equal(m->type, untouched.type);
	assert_true(m->requests == untouched.requests);
}

static void test_encode_exact(void **state)
{
	struct fpool__msg m = { .type = FPOOL_MSG_READY, .requests = 7 };
	char buf[128];
	size_t len = 0;

	(void)state;
	assert_int_equal(fpool__msg_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, strlen("{\"type\":\"ready\"}"));
	assert_memory_equal(buf, "{\"type\":\"ready\"}", len);

	m.type = FPOOL_MSG_HEARTBEAT;
	m.requests = 42;
	assert_int_equal(fpool__msg_encode(&m, buf, sizeof(buf), &len), 0);
	assert_int_equal(len,
			 strlen("{\"type\":\"heartbeat\",\"requests\":42}"));
	assert_memory_equal(buf, "{\"type\":\"heartbeat\",\"requests\":42}",
			    len);

	/* Too small a buffer is refused, not overrun. */
	buf[5] = 'X';
	assert_int_equal(fpool__msg_encode(&m, buf, 5, &len), -EMSGSIZE);
	assert_int_equal(buf[5], 'X');

	m.type = (enum fpool__msg_type)99;
	assert_int_equal(fpool__msg_encode(&m, buf, sizeof(buf), &len),
			 -EINVAL);
}

static void test_round_trip(void **state)
{
	static const struct fpool__msg cases[] = {
		{ .type = FPOOL_MSG_READY, .requests = 0 },
		{ .type = FPOOL_MSG_HEARTBEAT, .requests = 0 },
		{ .type = FPOOL_MSG_HEARTBEAT, .requests = 1 },
		{ .type = FPOOL_MSG_HEARTBEAT, .requests = 123456789 },
		{ .type = FPOOL_MSG_HEARTBEAT,
		  .requests = (uint64_t)INT64_MAX + 1 },
		{ .type = FPOOL_MSG_HEARTBEAT, .requests = UINT64_MAX },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		struct fpool__msg out = untouched;
		char buf[128];
		size_t len;

		assert_int_equal(
			fpool__msg_encode(&cases[i], buf, sizeof(buf), &len),
			0);
		assert_int_equal(fpool__msg_decode(buf, len, &out), 0);
		assert_int_equal(out.type, cases[i].type);
		assert_true(out.requests == cases[i].requests);
	}
}

static void test_decode_good(void **state)
{
	static const struct {
		struct pkt p;
		enum fpool__msg_type type;
		uint64_t requests;
	} cases[] = {
		{ PKT("{\"type\":\"ready\"}"), FPOOL_MSG_READY, 0 },
		{ PKT(" {\n\t\"type\" : \"ready\" } \n"), FPOOL_MSG_READY, 0 },
		/* A ready message has no counter: it is ignored. */
		{ PKT("{\"type\":\"ready\",\"requests\":5}"), FPOOL_MSG_READY,
		  0 },
		{ PKT("{\"type\":\"heartbeat\"}"), FPOOL_MSG_HEARTBEAT, 0 },
		{ PKT("{\"requests\":5,\"type\":\"heartbeat\"}"),
		  FPOOL_MSG_HEARTBEAT, 5 },
		{ PKT("{\"type\":\"heartbeat\",\"requests\":"
		      "18446744073709551615}"),
		  FPOOL_MSG_HEARTBEAT, UINT64_MAX },
		/* Unknown keys, of any type, are for later versions. */
		{ PKT("{\"pid\":12,\"type\":\"heartbeat\",\"x\":{\"y\":[1,"
		      "null,true,\"\\u00e9\"]},\"requests\":3}"),
		  FPOOL_MSG_HEARTBEAT, 3 },
		/* Only a "\u0000" escape is refused, not "\\" + "u0000". */
		{ PKT("{\"type\":\"ready\",\"x\":\"\\\\u0000\"}"),
		  FPOOL_MSG_READY, 0 },
		{ PKT("{\"type\":\"ready\",\"x\":\"\xc3\xa9\"}"),
		  FPOOL_MSG_READY, 0 },
		{ PKT("{\"type\":\"ready\",\"x\":\"\xe2\x82\xac\xf0\x9f\x98"
		      "\x80\xf4\x8f\xbf\xbf\"}"),
		  FPOOL_MSG_READY, 0 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		struct fpool__msg m = untouched;
		int r = fpool__msg_decode(cases[i].p.buf, cases[i].p.len, &m);

		if (r != 0)
			fail_msg("case %zu (%s): %d", i, cases[i].p.buf, r);
		assert_int_equal(m.type, cases[i].type);
		assert_true(m.requests == cases[i].requests);
	}
}

/* Escapes of characters outside the BMP, as a surrogate pair, decode to
 * their UTF-8 (the lone halves are refused: test_decode_bad). */
static void test_decode_surrogate_pair(void **state)
{
	static const struct pkt p =
		PKT("{\"type\":\"log\",\"level\":\"info\",\"time\":1,"
		    "\"msg\":\"a\\ud83d\\ude00b\"}");
	struct fpool__msg m = untouched;

	(void)state;
	assert_int_equal(fpool__msg_decode(p.buf, p.len, &m), 0);
	assert_string_equal(m.text, "a\xf0\x9f\x98\x80"
				    "b");
	fpool__msg_clear(&m);
}

static void check_bad(const char *buf, size_t len, const char *what)
{
	struct fpool__msg m = untouched;
	int r = fpool__msg_decode(buf, len, &m);

	if (r != -EINVAL)
		fail_msg("%s: %d, want -EINVAL", what, r);
	assert_untouched(&m);
}

static void test_decode_bad(void **state)
{
	static const struct pkt cases[] = {
		PKT(""),
		PKT(" "),
		PKT("{"),
		PKT("}"),
		PKT("[]"),
		PKT("null"),
		PKT("\"ready\""),
		PKT("{}"),
		PKT("{\"type\":1}"),
		PKT("{\"type\":null}"),
		PKT("{\"type\":[\"ready\"]}"),
		PKT("{\"type\":\"nope\"}"),
		PKT("{\"type\":\"READY\"}"),
		PKT("{\"type\":\"\"}"),
		PKT("{\"Type\":\"ready\"}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":-1}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":-0}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":\"x\"}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":\"1\"}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":1.5}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":1.0}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":1e3}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":null}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":true}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":"
		    "18446744073709551616}"),
		PKT("{\"type\":\"heartbeat\",\"requests\":"
		    "99999999999999999999999999}"),
		PKT("{\"type\":\"ready\"} x"),
		PKT("{\"type\":\"ready\"}{\"type\":\"ready\"}"),
		PKT("{\"type\":\"ready\",}"),
		PKT("{'type':'ready'}"),
		PKT("{type:\"ready\"}"),
		PKT("/* hi */{\"type\":\"ready\"}"),
		PKT("{\"type\":\"ready\"}// hi"),
		/* Embedded NUL bytes, raw and escaped. */
		PKT("{\"type\":\"ready\"}\0"),
		PKT("{\"type\":\"re\0ady\"}"),
		PKT("\0{\"type\":\"ready\"}"),
		PKT("{\"type\":\"ready\\u0000junk\"}"),
		PKT("{\"type\\u0000x\":\"ready\"}"),
		/* Invalid UTF-8. */
		PKT("{\"type\":\"\xff\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xc3\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xc0\xaf\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xed\xa0\x80\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xe0\x80\xaf\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xf4\x90\x80\x80\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\xf5\x80\x80\x80\"}"),
		PKT("{\"type\":\"ready\",\"x\":\"\x80\"}"),
		PKT("{\"type\":\"ready\"}\xe2\x82"),
		PKT("\xef\xbb\xbf{\"type\":\"ready\"}"),
		/* A "\u" escape of a lone surrogate, which yajl decodes
		 * into ill-formed UTF-8 (ED B7 9D for U+DDDD), in a log
		 * record's message, field name or field value. */
		PKT("{\"type\":\"log\",\"level\":\"info\",\"time\":1,"
		    "\"msg\":\"o\\udddd\"}"),
		PKT("{\"type\":\"log\",\"level\":\"info\",\"time\":1,"
		    "\"msg\":\"o\",\"fields\":{\"\\udc00\":\"v\"}}"),
		PKT("{\"type\":\"log\",\"level\":\"info\",\"time\":1,"
		    "\"msg\":\"o\",\"fields\":{\"k\":\"\\udfff\"}}"),
		/* Truncated escapes at the very end of the packet. */
		PKT("{\"type\":\"ready\",\"x\":\"\\"),
		PKT("{\"type\":\"ready\",\"x\":\"\\u00"),
	};
	size_t i;

	(void)state;
	for (i = 0; i < FPOOL_NELEM(cases); i++) {
		char what[64];

		snprintf(what, sizeof(what), "case %zu", i);
		check_bad(cases[i].buf, cases[i].len, what);
	}
	check_bad(NULL, 0, "NULL");
	check_bad("{\"type\":\"ready\"}", 0, "zero length");
}

/*
 * Packets are not NUL-terminated: decoding a prefix must look at that
 * prefix only.  Each prefix sits at the very end of a heap block, so
 * valgrind or ASan catch any read past it.
 */
static void test_decode_prefixes(void **state)
{
	static const char msg[] = "{\"type\":\"heartbeat\",\"requests\":17}";
	size_t n;

	(void)state;
	for (n = 0; n <= sizeof(msg) - 1; n++) {
		char *p = malloc(n ? n : 1);
		struct fpool__msg m = untouched;
		int r;

		assert_non_null(p);
		memcpy(p, msg, n);
		r = fpool__msg_decode(p, n, &m);
		free(p);
		if (n == sizeof(msg) - 1) {
			assert_int_equal(r, 0);
			assert_true(m.requests == 17);
		} else if (r != -EINVAL) {
			fail_msg("prefix of %zu bytes: %d", n, r);
		}
	}
}

static void test_decode_sizes(void **state)
{
	static const char msg[] = "{\"type\":\"ready\"}";
	char *buf = malloc(FPOOL_CHAN_MAX + 1);
	struct fpool__msg m = untouched;

	(void)state;
	assert_non_null(buf);
	/* Exactly FPOOL_CHAN_MAX bytes is fine... */
	memset(buf, ' ', FPOOL_CHAN_MAX + 1);
	memcpy(buf, msg, sizeof(msg) - 1);
	assert_int_equal(fpool__msg_decode(buf, FPOOL_CHAN_MAX, &m), 0);
	assert_int_equal(m.type, FPOOL_MSG_READY);
	/* ...one more is not. */
	check_bad(buf, FPOOL_CHAN_MAX + 1, "over-long");
	free(buf);
}

/* Deep nesting must be refused before yajl builds (and recursively
 * frees) a tree of it. */
static void test_decode_deep(void **state)
{
	static const char head[] = "{\"type\":\"ready\",\"x\":";
	char *buf = malloc(FPOOL_CHAN_MAX);
	struct fpool__msg m = untouched;
	size_t depth, i, n;

	(void)state;
	assert_non_null(buf);

	/* A whole packet of "[[[[...]]]]". */
	memset(buf, '[', FPOOL_CHAN_MAX / 2);
	memset(buf + FPOOL_CHAN_MAX / 2, ']', FPOOL_CHAN_MAX / 2);
	check_bad(buf, FPOOL_CHAN_MAX, "64 KiB of nesting");

	/* Moderate nesting in an ignored key is fine; 100 levels are not. */
	for (depth = 4; depth <= 100; depth += 96) {
		n = 0;
		memcpy(buf, head, sizeof(head) - 1);
		n += sizeof(head) - 1;
		for (i = 0; i < depth; i++)
			buf[n++] = '[';
		for (i = 0; i < depth; i++)
			buf[n++] = ']';
		buf[n++] = '}';
		m = untouched;
		if (depth == 4) {
			assert_int_equal(fpool__msg_decode(buf, n, &m), 0);
			assert_int_equal(m.type, FPOOL_MSG_READY);
		} else {
			check_bad(buf, n, "100 levels");
		}
	}
	free(buf);
}

/* Any bytes at all: the answer is a valid message or -EINVAL, never a
 * crash (run under valgrind/ASan for the "never reads out of bounds"
 * half).  A fixed seed keeps failures reproducible. */
static void test_decode_garbage(void **state)
{
	static const char seed_msg[] =
		"{\"type\":\"heartbeat\",\"requests\":12,\"x\":[\"a\\n\"]}";
	static const char alphabet[] = "{}[]\":,\\/u0123456789e.-+ \ttnf\xff";
	unsigned rng = 12345;
	char buf[96];
	size_t i, j, n, at;

	(void)state;
	for (i = 0; i < 20000; i++) {
		struct fpool__msg m = untouched;
		int r;

		memset(buf, ' ', sizeof(buf));
		memcpy(buf, seed_msg, sizeof(seed_msg) - 1);
		n = sizeof(seed_msg) - 1;
		/* A few edits of a valid message: JSON-ish bytes within it,
		 * or (one time in five) any byte anywhere. */
		for (j = 0; j < 1 + i % 4; j++) {
			rng = rng * 1103515245u + 12345u;
			at = (rng >> 8) % (i % 5 ? n : sizeof(buf));

			if (i % 5 == 0)
				buf[at] = (char)(rng >> 16);
			else
				buf[at] = alphabet[(rng >> 16) %
						   (sizeof(alphabet) - 1)];
		}
		rng = rng * 1103515245u + 12345u;
		if (i % 3 == 0)
			n = (rng >> 8) % (sizeof(buf) + 1);
		r = fpool__msg_decode(buf, n, &m);
		if (r == 0)
			assert_true(m.type == FPOOL_MSG_READY ||
				    m.type == FPOOL_MSG_HEARTBEAT);
		else if (r != -EINVAL)
			fail_msg("iteration %zu: %d", i, r);
		else
			assert_untouched(&m);
	}
}

/* Receive one packet and decode it. */
static int recv_msg(int fd, struct fpool__msg *m)
{
	char buf[FPOOL_CHAN_MAX];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);

	if (n < 0)
		return -errno;
	return fpool__msg_decode(buf, (size_t)n, m);
}

static void test_socketpair(void **state)
{
	struct fpool__msg ready = { .type = FPOOL_MSG_READY };
	struct fpool__msg hb = { .type = FPOOL_MSG_HEARTBEAT, .requests = 99 };
	struct fpool__msg m;
	int sv[2];

	(void)state;
	assert_int_equal(
		socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fpool__msg_send(sv[0], &ready, true), 0);
	assert_int_equal(fpool__msg_send(sv[0], &hb, false), 0);
	assert_int_equal(fpool__msg_send(sv[0], &hb, true), 0);

	/* One message per packet, in order. */
	assert_int_equal(recv_msg(sv[1], &m), 0);
	assert_int_equal(m.type, FPOOL_MSG_READY);
	assert_int_equal(recv_msg(sv[1], &m), 0);
	assert_int_equal(m.type, FPOOL_MSG_HEARTBEAT);
	assert_int_equal(m.requests, 99);
	assert_int_equal(recv_msg(sv[1], &m), 0);
	assert_int_equal(m.type, FPOOL_MSG_HEARTBEAT);
	assert_int_equal(recv(sv[1], &m, sizeof(m), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);

	/* The peer is gone: an error, not SIGPIPE (which would kill us). */
	close(sv[1]);
	assert_int_equal(fpool__msg_send(sv[0], &hb, false), -EPIPE);
	assert_int_equal(fpool__msg_send(sv[0], &ready, true), -EPIPE);
	close(sv[0]);
}

/* Send heartbeats without blocking until the channel is full. */
static unsigned fill(int fd)
{
	struct fpool__msg hb = { .type = FPOOL_MSG_HEARTBEAT, .requests = 1 };
	unsigned sent = 0;
	int r;

	while ((r = fpool__msg_send(fd, &hb, false)) == 0) {
		sent++;
		assert_true(sent < 1000000);
	}
	assert_int_equal(r, -EAGAIN);
	return sent;
}

/* True once `pid` sleeps in poll(2) or ppoll(2): /proc/PID/stat says
 * it sleeps, and /proc/PID/syscall which call it sleeps in.  Where that
 * file cannot be read (a stricter ptrace policy than "a parent may look
 * at its child"), sleeping at all has to do: the child has nowhere else
 * to sleep. */
static bool sleeps_in_poll(pid_t pid)
{
	char path[64], buf[512], *p;
	long nr;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The state follows the command name, which ends at the last ')'. */
	p = strrchr(buf, ')');
	assert_non_null(p);
	if (p[1] != ' ' || p[2] != 'S')
		return false;
	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return true;
	n = fscanf(f, "%ld", &nr);
	fclose(f);
	if (n != 1)
		return true;
#ifdef SYS_poll
	if (nr == SYS_poll)
		return true;
#endif
#ifdef SYS_ppoll
	if (nr == SYS_ppoll)
		return true;
#endif
	return false;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_full_channel(void **state)
{
	const struct timespec ms = { 0, 1000 * 1000 };
	struct fpool__msg ready = { .type = FPOOL_MSG_READY };
	struct fpool__msg m;
	unsigned sent, got, ok = 0;
	double deadline;
	int sv[2], status;
	pid_t pid;

	(void)state;
	/* A send that never returns would hang the whole test run. */
	alarm(10);
	assert_int_equal(
		socketpair(AF_UNIX,
			   SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
			   sv),
		0);
	/* A heartbeat never waits: a full channel is -EAGAIN at once. */
	sent = fill(sv[0]);
	assert_true(sent > 0);

	/* A blocking send waits for room even on an O_NONBLOCK socket.  A
	 * child sends on the full channel; once it sleeps in poll(2) there,
	 * the test makes room by reading the heartbeats: all of them, since
	 * POLLOUT on a unix socket only comes back once most of the send
	 * buffer is free.  (Room made before the child waits would prove
	 * nothing, hence the wait for its sleep.) */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(10); /* the parent's alarm is not inherited */
		_exit(fpool__msg_send(sv[0], &ready, true) == 0 ? 0 : 1);
	}
	deadline = now() + 5; /* within the alarm above */
	while (!sleeps_in_poll(pid)) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			fail_msg("the blocking send on a full channel returned "
				 "without waiting (status %d)",
				 status);
		if (now() > deadline) {
			kill(pid, SIGKILL);
			fail_msg("the child never waited in poll(2) for room");
		}
		/* The deadline is the bound; this only paces the polling. */
		nanosleep(&ms, NULL);
	}
	for (got = 0; got < sent; got++)
		if (recv_msg(sv[1], &m) == 0 && m.type == FPOOL_MSG_HEARTBEAT)
			ok++;
	assert_int_equal(ok, sent);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* The message that waited arrives, after all the others. */
	assert_int_equal(recv_msg(sv[1], &m), 0);
	assert_int_equal(m.type, FPOOL_MSG_READY);
	assert_int_equal(recv_msg(sv[1], &m), -EAGAIN);
	alarm(0);
	close(sv[0]);
	close(sv[1]);
}

/* Messages (fpool__message_send): one packet each, FPOOL_CHAN_MESSAGE
 * and the bytes, in order, up to FPOOL_MESSAGE_MAX; a full channel is
 * -EAGAIN at once; a peer gone is -EPIPE. */
static void test_messages(void **state)
{
	static char big[FPOOL_MESSAGE_MAX + 2];
	char buf[FPOOL_MESSAGE_MAX + 2];
	int sv[2], sent = 0, r;
	ssize_t n;

	(void)state;
	assert_int_equal(
		socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fpool__message_send(sv[0], "one", 3), 0);
	assert_int_equal(fpool__message_send(sv[0], "", 0), 0);
	assert_int_equal(fpool__message_send(sv[0], "\0two\xff", 5), 0);
	n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "mone", 4);
	n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
	assert_int_equal(n, 1);
	assert_int_equal(buf[0], FPOOL_CHAN_MESSAGE);
	n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
	assert_int_equal(n, 6);
	assert_memory_equal(buf + 1, "\0two\xff", 5);
	/* The bound: exactly FPOOL_MESSAGE_MAX goes, one more does not. */
	memset(big, 'b', sizeof(big));
	assert_int_equal(fpool__message_send(sv[0], big, FPOOL_MESSAGE_MAX), 0);
	n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
	assert_int_equal(n, FPOOL_MESSAGE_MAX + 1);
	assert_int_equal(fpool__message_send(sv[0], big, FPOOL_MESSAGE_MAX + 1),
			 -EMSGSIZE);
	/* Nobody reads: -EAGAIN once the socket buffer is full, never a
	 * wait; what was sent is all there, in order. */
	while ((r = fpool__message_send(sv[0], big, 1000)) == 0)
		sent++;
	assert_int_equal(r, -EAGAIN);
	assert_true(sent > 10);
	for (int i = 0; i < sent; i++) {
		n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
		assert_int_equal(n, 1001);
	}
	assert_int_equal(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), -1);
	close(sv[1]);
	assert_int_equal(fpool__message_send(sv[0], "x", 1), -EPIPE);
	close(sv[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_encode_exact),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_decode_good),
		cmocka_unit_test(test_decode_surrogate_pair),
		cmocka_unit_test(test_decode_bad),
		cmocka_unit_test(test_decode_prefixes),
		cmocka_unit_test(test_decode_sizes),
		cmocka_unit_test(test_decode_deep),
		cmocka_unit_test(test_decode_garbage),
		cmocka_unit_test(test_socketpair),
		cmocka_unit_test(test_full_channel),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
