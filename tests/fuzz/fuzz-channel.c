/*
 * libFuzzer target: one channel packet, as any worker could send it, into
 * the master's decoder (fpool__msg_decode).
 *
 * Beyond "no crash, no leak, no sanitizer report", a packet that decodes
 * must give a well-formed message, and that message must survive the
 * encoder: decode(encode(m)) == m, except for the time, which the encoder
 * writes with six decimals.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz-channel: %s\n", what);
		abort();
	}
}

static bool same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void check_same(const struct fpool__msg *a, const struct fpool__msg *b)
{
	check(a->type == b->type, "type changed in a round trip");
	check(a->requests == b->requests, "requests changed in a round trip");
	if (a->type != FPOOL_MSG_LOG)
		return;
	check(a->level == b->level, "level changed in a round trip");
	check(same_str(a->text, b->text), "msg changed in a round trip");
	check(a->nfields == b->nfields, "fields changed in a round trip");
	for (size_t i = 0; i < a->nfields; i++) {
		check(same_str(a->fields[i].key, b->fields[i].key) &&
			      same_str(a->fields[i].value, b->fields[i].value),
		      "a field changed in a round trip");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Escaping can make the encoded form longer than the packet. */
	static char buf[8 * FPOOL_CHAN_MAX];
	struct fpool__msg m = { 0 }, again = { 0 };
	size_t len;

	if (fpool__msg_decode((const char *)data, size, &m) != 0)
		return 0;
	check(m.type == FPOOL_MSG_READY || m.type == FPOOL_MSG_HEARTBEAT ||
		      m.type == FPOOL_MSG_LOG,
	      "decoded an unknown type");
	if (m.type == FPOOL_MSG_LOG) {
		check(m.text != NULL, "a log message without text");
		check((unsigned)m.level <= FPOOL_LOG_ERROR, "bad level");
		check(m.nfields <= FPOOL_LOG_MAX_FIELDS, "too many fields");
	}
	/* Decoded strings are not promised to be encodable (the encoder
	 * refuses what is not valid UTF-8), so only a success is compared;
	 * a packet too big once re-encoded is skipped as well. */
	if (fpool__msg_encode(&m, buf, sizeof(buf), &len) == 0 &&
	    len <= FPOOL_CHAN_MAX) {
		check(fpool__msg_decode(buf, len, &again) == 0,
		      "the encoder's output does not decode");
		check_same(&m, &again);
		fpool__msg_clear(&again);
	}
	fpool__msg_clear(&m);
	return 0;
}
