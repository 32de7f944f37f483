/*
 * libFuzzer target: what a client writes to the control socket, through
 * fpool__control_handle on a pool that is never run (no process is
 * forked, as in tests/unit/test-control.c: tests/common/dummy-pool.h).
 *
 * The input is cut at newlines into up to MAX_REQUESTS request lines, all
 * answered by one fresh pool, so that sequences ("scale", then "remove",
 * then "output") are explored too.  Every reply must be exactly one line
 * holding a JSON object with a boolean "ok".  Nothing may leak: the pool
 * and the reply buffer are freed after each input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"
#include "dummy-pool.h"

#define MAX_REQUESTS 8

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what, const char *reply)
{
	if (!ok) {
		fprintf(stderr, "fuzz-control: %s (reply '%s')\n", what,
			reply ? reply : "");
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* The master's log lines ("scaled to 8 workers") are formatted as
	 * usual but not printed over libFuzzer's own output. */
	if (fpool_log_open("/dev/null", FPOOL_LOG_TEXT) != 0)
		abort();
	return 0;
}

static void check_reply(struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	char *line = malloc(n + 1);
	yajl_val v, ok;
	const char *path[] = { "ok", NULL };

	check(line != NULL, "out of memory", NULL);
	evbuffer_remove(out, line, n);
	line[n] = '\0';
	check(n > 0 && line[n - 1] == '\n', "no reply line", line);
	check(strchr(line, '\n') == line + n - 1, "more than one line", line);
	v = yajl_tree_parse(line, NULL, 0);
	check(v != NULL && YAJL_IS_OBJECT(v), "not a JSON object", line);
	ok = yajl_tree_get(v, path, yajl_t_any);
	check(ok != NULL && (YAJL_IS_TRUE(ok) || YAJL_IS_FALSE(ok)),
	      "no boolean \"ok\"", line);
	yajl_tree_free(v);
	free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	struct fpool_pool *pool;
	struct evbuffer *out;
	bool stop, graceful;

	if (dummy_pool_new(&pool, 3) != 0)
		abort();
	out = evbuffer_new();
	if (out == NULL)
		abort();
	for (int i = 0; i < MAX_REQUESTS && p < end; i++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		fpool__control_handle(pool, p, len, out, &stop, &graceful);
		check_reply(out);
		p += len + (nl != NULL);
	}
	evbuffer_free(out);
	fpool_pool_free(pool);
	return 0;
}
