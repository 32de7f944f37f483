/*
 * The master <-> worker channel: one JSON object per SOCK_SEQPACKET
 * packet, {"type":"ready"} or {"type":"heartbeat","requests":N}.  The
 * packet boundaries come from the socket type, so there is no framing to
 * get wrong; the master decodes whatever a worker sends and must survive
 * any bytes at all.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

/*
 * Deepest nesting of arrays and objects a packet may have.  Our messages
 * are flat; the bound exists because yajl_tree_free() recurses once per
 * level, and 64 KiB of "[" would otherwise be 32768 nested frames, enough
 * to overflow a small stack.
 */
#define CHAN_DEPTH 16

static const struct {
	enum fpool__msg_type type;
	const char *name;
} msg_types[] = {
	{ FPOOL_MSG_READY, "ready" },
	{ FPOOL_MSG_HEARTBEAT, "heartbeat" },
	{ FPOOL_MSG_LOG, "log" },
};

static const char *type_name(enum fpool__msg_type type)
{
	size_t i;

	for (i = 0; i < FPOOL_NELEM(msg_types); i++)
		if (msg_types[i].type == type)
			return msg_types[i].name;
	return NULL;
}

static int type_parse(const char *name, enum fpool__msg_type *type)
{
	size_t i;

	for (i = 0; i < FPOOL_NELEM(msg_types); i++) {
		if (strcmp(msg_types[i].name, name) == 0) {
			*type = msg_types[i].type;
			return 0;
		}
	}
	return -EINVAL;
}

/* Write m into g.  0, or -EINVAL (unknown type, or a string that is
 * not valid UTF-8: yajl's generator validates). */
static int encode(const struct fpool__msg *m, yajl_gen g)
{
	const char *name = type_name(m->type);
	char num[32];
	bool ok;

	if (name == NULL)
		return -EINVAL;
	ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
	     fpool__json_str(g, "type") && fpool__json_str(g, name);
	if (ok && m->type == FPOOL_MSG_HEARTBEAT) {
		/* yajl_gen_integer() takes a long long; the counter is a
		 * uint64_t, so write its digits ourselves. */
		snprintf(num, sizeof(num), "%" PRIu64, m->requests);
		ok = fpool__json_str(g, "requests") &&
		     yajl_gen_number(g, num, strlen(num)) == yajl_gen_status_ok;
	}
	if (ok && m->type == FPOOL_MSG_LOG) {
		if (fpool__level_name(m->level) == NULL ||
		    m->nfields > FPOOL_LOG_MAX_FIELDS ||
		    !(m->time >= 0 && m->time < FPOOL_LOG_TIME_MAX))
			return -EINVAL;
		snprintf(num, sizeof(num), "%.6f", m->time);
		ok = fpool__json_str(g, "level") &&
		     fpool__json_str(g, fpool__level_name(m->level)) &&
		     fpool__json_str(g, "time") &&
		     yajl_gen_number(g, num, strlen(num)) ==
			     yajl_gen_status_ok &&
		     fpool__json_str(g, "msg") &&
		     fpool__json_str(g, m->text ? m->text : "");
		if (ok && m->nfields > 0) {
			ok = fpool__json_str(g, "fields") &&
			     yajl_gen_map_open(g) == yajl_gen_status_ok;
			for (size_t i = 0; ok && i < m->nfields; i++)
				ok = fpool__json_str(g, m->fields[i].key) &&
				     fpool__json_str(g, m->fields[i].value);
			ok = ok && yajl_gen_map_close(g) == yajl_gen_status_ok;
		}
	}
	ok = ok && yajl_gen_map_close(g) == yajl_gen_status_ok;
	return ok ? 0 : -EINVAL;
}

static yajl_gen gen_new(void)
{
	yajl_gen g = yajl_gen_alloc(NULL);

	/* Refuse to write invalid UTF-8: the decoder would refuse it. */
	if (g != NULL)
		yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	return g;
}

int fpool__msg_encode(const struct fpool__msg *m, char *buf, size_t cap,
		      size_t *len)
{
	const unsigned char *out;
	size_t n;
	yajl_gen g = gen_new();
	int r;

	if (g == NULL)
		return -ENOMEM;
	r = encode(m, g);
	if (r == 0 && yajl_gen_get_buf(g, &out, &n) != yajl_gen_status_ok)
		r = -EINVAL;
	if (r == 0 && n > cap)
		r = -EMSGSIZE;
	if (r == 0) {
		memcpy(buf, out, n);
		*len = n;
	}
	yajl_gen_free(g);
	return r;
}

/* The value of `key` in object `obj`, or NULL.  yajl_tree_get() is not
 * used: in yajl 2.1.0 it compares the index of the match against the
 * length of the value found rather than of the object, so it can miss a
 * key that is present. */
/* A JSON number that is a whole number in [0, UINT64_MAX].  Its text is
 * read rather than yajl's long long, which stops at INT64_MAX. */
static int get_u64(yajl_val v, uint64_t *out)
{
	const char *s;
	uint64_t n = 0;

	if (!YAJL_IS_NUMBER(v))
		return -EINVAL;
	s = YAJL_GET_NUMBER(v);
	if (s == NULL || *s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		unsigned d = (unsigned)(*s - '0');

		/* Also refuses "-1", "1.0" and "1e3". */
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (n > (UINT64_MAX - d) / 10)
			return -EINVAL;
		n = n * 10 + d;
	}
	*out = n;
	return 0;
}

void fpool__msg_clear(struct fpool__msg *m)
{
	free(m->text);
	m->text = NULL;
	for (size_t i = 0; i < m->nfields; i++) {
		free((char *)m->fields[i].key);
		free((char *)m->fields[i].value);
	}
	free(m->fields);
	m->fields = NULL;
	m->nfields = 0;
}

static int decode_log(yajl_val root, struct fpool__msg *m)
{
	yajl_val level = fpool__json_get(root, "level");
	yajl_val time = fpool__json_get(root, "time");
	yajl_val msg = fpool__json_get(root, "msg");
	yajl_val fields = fpool__json_get(root, "fields");
	size_t i, n = 0;

	/* Strings are well-formed UTF-8: fpool_json_check() saw to it. */
	if (!YAJL_IS_STRING(level) || !YAJL_IS_NUMBER(time) ||
	    !YAJL_IS_STRING(msg))
		return -EINVAL;
	if (fpool_log_level_parse(level->u.string, &m->level) != 0 ||
	    !(time->u.number.flags & YAJL_NUMBER_DOUBLE_VALID))
		return -EINVAL;
	m->time = YAJL_GET_DOUBLE(time);
	/* A Unix time: the encoder's "%.6f" has room for these only. */
	if (!(m->time >= 0 && m->time < FPOOL_LOG_TIME_MAX))
		return -EINVAL;
	if (fields != NULL) {
		if (!YAJL_IS_OBJECT(fields) ||
		    fields->u.object.len > FPOOL_LOG_MAX_FIELDS)
			return -EINVAL;
		n = fields->u.object.len;
		for (i = 0; i < n; i++)
			if (!YAJL_IS_STRING(fields->u.object.values[i]))
				return -EINVAL;
	}
	m->nfields = 0;
	m->fields = n ? calloc(n, sizeof(*m->fields)) : NULL;
	m->text = strdup(msg->u.string);
	if ((n && m->fields == NULL) || m->text == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		struct fpool_log_field *f = &m->fields[m->nfields++];

		f->key = strdup(fields->u.object.keys[i]);
		f->value = strdup(fields->u.object.values[i]->u.string);
		if (f->key == NULL || f->value == NULL)
			goto nomem;
	}
	return 0;
nomem:
	fpool__msg_clear(m);
	return -ENOMEM;
}

static int decode_tree(yajl_val root, struct fpool__msg *m)
{
	yajl_val type, requests;
	int r;

	if (!YAJL_IS_OBJECT(root))
		return -EINVAL;
	type = fpool__json_get(root, "type");
	if (!YAJL_IS_STRING(type))
		return -EINVAL;
	r = type_parse(YAJL_GET_STRING(type), &m->type);
	if (r < 0)
		return r;
	m->requests = 0;
	if (m->type == FPOOL_MSG_LOG)
		return decode_log(root, m);
	if (m->type == FPOOL_MSG_HEARTBEAT) {
		requests = fpool__json_get(root, "requests");
		if (requests != NULL) {
			r = get_u64(requests, &m->requests);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int fpool__msg_decode(const char *buf, size_t len, struct fpool__msg *m)
{
	struct fpool__msg tmp = { 0 };
	yajl_val root;
	char *copy;
	int r;

	if (buf == NULL || len == 0 || len > FPOOL_CHAN_MAX)
		return -EINVAL;
	/* Refused before yajl sees it: what fpool_json_check() names, and
	 * comments, which our encoder never writes. */
	if (fpool_json_check(buf, len, CHAN_DEPTH, FPOOL_JSON_NO_COMMENTS))
		return -EINVAL;
	/* The packet is not NUL-terminated; yajl_tree_parse() needs it to
	 * be.  64 KiB is too much for a worker's stack, hence the heap. */
	copy = malloc(len + 1);
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, buf, len);
	copy[len] = '\0';
	root = yajl_tree_parse(copy, NULL, 0);
	free(copy);
	if (root == NULL)
		return -EINVAL;
	r = decode_tree(root, &tmp);
	yajl_tree_free(root);
	if (r == 0)
		*m = tmp;
	return r;
}

/* Wait until fd can take a packet.  Needed even for a blocking send: the
 * channel may be O_NONBLOCK because an event loop also reads it. */
static int wait_writable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };

	for (;;) {
		if (poll(&pfd, 1, -1) >= 0)
			break;
		if (errno != EINTR)
			return -errno;
	}
	if (pfd.revents & POLLNVAL)
		return -EBADF;
	/* On POLLERR or POLLHUP the next send() reports the error. */
	return 0;
}

int fpool__msg_send(int fd, const struct fpool__msg *m, bool block)
{
	const unsigned char *buf;
	size_t len;
	ssize_t n;
	yajl_gen g = gen_new();
	int r;

	if (g == NULL)
		return -ENOMEM;
	r = encode(m, g);
	if (r == 0 && yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok)
		r = -EINVAL;
	if (r == 0 && len > FPOOL_CHAN_MAX)
		r = -EMSGSIZE;
	while (r == 0) {
		/* MSG_NOSIGNAL: a dead peer is -EPIPE, not a SIGPIPE. */
		n = send(fd, buf, len,
			 MSG_NOSIGNAL | (block ? 0 : MSG_DONTWAIT));
		if (n >= 0) {
			/* SOCK_SEQPACKET sends all or nothing; a short send
			 * would mean a truncated object on the other side. */
			r = (size_t)n == len ? 0 : -EMSGSIZE;
			break;
		}
		if (errno == EINTR)
			continue;
		if (block && (errno == EAGAIN || errno == EWOULDBLOCK))
			r = wait_writable(fd);
		else
			r = -errno;
	}
	yajl_gen_free(g);
	return r;
}
