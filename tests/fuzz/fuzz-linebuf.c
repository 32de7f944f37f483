/*
 * libFuzzer target: the line splitter that cuts a worker's stdout and
 * stderr into lines (fpool__linebuf_feed, fpool__linebuf_flush).
 *
 * The input is
 *   byte 0      bits 0-3: how many chunk sizes follow (0: one chunk);
 *               bit 4: the payload is run-length encoded (see below)
 *   2 bytes     per chunk size, little-endian; the payload is fed in
 *               chunks of these sizes, cycling, as reads from a pipe
 *               would deliver it
 *   the rest    the payload; run-length encoded it is triples
 *               (count low, count high, byte), which reaches lines
 *               around FPOOL_LINE_MAX (16 KiB) with small inputs.
 *
 * How reads split the stream must not matter: the lines handed out for
 * the chunked feed must be exactly those of one feed of the whole
 * payload.  Each line is at most FPOOL_LINE_MAX bytes, holds no newline,
 * and no byte is lost or invented.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

/* Longest payload after run-length decoding. */
#define MAX_PAYLOAD (5 * FPOOL_LINE_MAX)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The lines handed out, each stored as its length then its bytes. */
struct lines {
	char *buf;
	size_t len, cap;
	size_t count, bytes;
};

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz-linebuf: %s\n", what);
		abort();
	}
}

static void append(struct lines *l, const void *p, size_t n)
{
	if (l->len + n > l->cap) {
		l->cap = (l->len + n) * 2;
		l->buf = realloc(l->buf, l->cap);
		check(l->buf != NULL, "out of memory");
	}
	memcpy(l->buf + l->len, p, n);
	l->len += n;
}

static void line_cb(const char *line, size_t len, void *arg)
{
	struct lines *l = arg;

	check(len <= FPOOL_LINE_MAX, "a line longer than FPOOL_LINE_MAX");
	check(memchr(line, '\n', len) == NULL, "a newline inside a line");
	append(l, &len, sizeof(len));
	append(l, line, len);
	l->count++;
	l->bytes += len;
}

static void split(const char *p, size_t n, const uint16_t *sizes, size_t nsizes,
		  struct lines *out)
{
	struct fpool__linebuf lb = { 0 };
	size_t i = 0, stalled = 0;

	while (n > 0) {
		size_t take = nsizes ? sizes[i++ % nsizes] : n;

		/* A whole cycle of zero sizes: feed the rest at once. */
		stalled = take == 0 ? stalled + 1 : 0;
		if (stalled > nsizes)
			take = n;
		if (take > n)
			take = n;
		check(fpool__linebuf_feed(&lb, p, take, line_cb, out) == 0,
		      "feed failed");
		p += take;
		n -= take;
	}
	fpool__linebuf_flush(&lb, line_cb, out);
	fpool__linebuf_free(&lb);
}

/* Expand (count low, count high, byte) triples into out. */
static size_t expand(const uint8_t *p, size_t n, char *out)
{
	size_t len = 0;

	for (; n >= 3; p += 3, n -= 3) {
		size_t count = (size_t)p[0] | (size_t)p[1] << 8;

		if (count > MAX_PAYLOAD - len)
			count = MAX_PAYLOAD - len;
		memset(out + len, p[2], count);
		len += count;
	}
	return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char payload[MAX_PAYLOAD];
	struct lines whole = { 0 }, chunked = { 0 };
	uint16_t sizes[15];
	size_t nsizes, len, newlines = 0;
	const char *p;

	if (size < 1)
		return 0;
	nsizes = data[0] & 0x0f;
	if (size < 1 + 2 * nsizes)
		return 0;
	for (size_t i = 0; i < nsizes; i++)
		sizes[i] = (uint16_t)(data[1 + 2 * i] | data[2 + 2 * i] << 8);
	p = (const char *)data + 1 + 2 * nsizes;
	len = size - 1 - 2 * nsizes;
	if (data[0] & 0x10) {
		len = expand((const uint8_t *)p, len, payload);
		p = payload;
	}

	split(p, len, NULL, 0, &whole);
	split(p, len, sizes, nsizes, &chunked);
	for (size_t i = 0; i < len; i++)
		newlines += p[i] == '\n';
	check(whole.bytes + newlines == len, "bytes lost or invented");
	check(chunked.count == whole.count,
	      "the number of lines depends on how reads split the stream");
	/* No line at all leaves both buffers NULL: memcmp() must not see
	 * them, even for 0 bytes. */
	check(chunked.len == whole.len &&
		      (whole.len == 0 ||
		       memcmp(chunked.buf, whole.buf, whole.len) == 0),
	      "the lines depend on how reads split the stream");
	free(whole.buf);
	free(chunked.buf);
	return 0;
}
