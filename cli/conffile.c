/*
 * The program's JSON config file: one object whose keys are the long
 * flags' names, read with yajl, with line:column for syntax errors.
 * What the keys mean is cli/options.c's business.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "cli.h"

/* ---- The JSON config file ---------------------------------------------- */

/*
 * A config file is small; a bigger one is a mistake (or an attack on a
 * parser), so it is refused before it is parsed.
 */
#define CONF_MAX_SIZE (1 << 20)
/* yajl_tree_free() recurses once per nesting level: cap the depth so a
 * file of a million '[' cannot overflow the stack.  Settings need 2. */
#define CONF_MAX_DEPTH 64

struct fpool__conf {
	yajl_val root; /* an object */
};

static void conf_value(yajl_val node, struct fpool__conf_value *v);

static int conf_error(char *err, size_t errlen, int r, const char *fmt, ...)
	FPOOL_PRINTF(4, 5);

static int conf_error(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

/* Line and column (both from 1, the column in characters) of byte `off`. */
static void conf_position(const char *text, size_t off, unsigned *line,
			  unsigned *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			(*col)++; /* not a UTF-8 continuation byte */
		}
	}
}

/*
 * The first pass: yajl's own parser, for the error position, which
 * yajl_tree_parse() does not give.  The callbacks only watch what the tree
 * would accept silently: the depth, and strings with NUL (C strings would
 * end there).
 */
struct conf_check {
	unsigned depth;
	const char *why; /* set when a callback cancels the parse */
};

static int check_open(void *ctx)
{
	struct conf_check *c = ctx;

	if (++c->depth > CONF_MAX_DEPTH) {
		c->why = "nested too deeply";
		return 0;
	}
	return 1;
}

static int check_open_map(void *ctx)
{
	return check_open(ctx);
}

static int check_close(void *ctx)
{
	struct conf_check *c = ctx;

	c->depth--;
	return 1;
}

static int check_string(void *ctx, const unsigned char *s, size_t len)
{
	struct conf_check *c = ctx;

	if (memchr(s, '\0', len) != NULL) {
		c->why = "a string holds a NUL character (\\u0000)";
		return 0;
	}
	return 1;
}

static int check_key(void *ctx, const unsigned char *s, size_t len)
{
	return check_string(ctx, s, len);
}

static const yajl_callbacks check_callbacks = {
	.yajl_string = check_string,
	.yajl_start_map = check_open_map,
	.yajl_map_key = check_key,
	.yajl_end_map = check_close,
	.yajl_start_array = check_open,
	.yajl_end_array = check_close,
};

/* yajl's message without its "parse error: " prefix, final dot and
 * newline.  True if it was a lexical error (a bad character). */
static bool conf_yajl_message(yajl_handle h, char *buf, size_t len)
{
	unsigned char *m = yajl_get_error(h, 0, NULL, 0);
	const char *p = m != NULL ? (const char *)m : "invalid JSON";
	bool lexical = false;
	size_t n;

	if (strncmp(p, "parse error: ", 13) == 0) {
		p += 13;
	} else if (strncmp(p, "lexical error: ", 15) == 0) {
		p += 15;
		lexical = true;
	}
	if (strncmp(p, "premature EOF", 13) == 0)
		p = "unexpected end of file";
	snprintf(buf, len, "%s", p);
	n = strlen(buf);
	while (n > 0 &&
	       (buf[n - 1] == '\n' || buf[n - 1] == '.' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	if (m != NULL)
		yajl_free_error(h, m);
	return lexical;
}

static bool conf_space(char c)
{
	/* yajl's blanks, \v and \f included */
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
	       c == '\f';
}

/* The end of the token of JSON text (or comment) that starts at i. */
static size_t conf_token_end(const char *t, size_t len, size_t i, bool *number)
{
	*number = false;
	if (t[i] == '"') {
		for (i++; i < len && t[i] != '"'; i++)
			if (t[i] == '\\')
				i++;
		return i < len ? i + 1 : len;
	}
	if (t[i] == '/' && i + 1 < len &&
	    (t[i + 1] == '/' || t[i + 1] == '*')) {
		bool line = t[i + 1] == '/';

		for (i += 2; i < len; i++) {
			if (line && t[i] == '\n')
				return i;
			if (!line && t[i] == '*' && i + 1 < len &&
			    t[i + 1] == '/')
				return i + 2;
		}
		return len;
	}
	if (t[i] == '-' || (t[i] >= '0' && t[i] <= '9')) {
		*number = true;
		for (i++; i < len && strchr("0123456789+-.eE", t[i]) != NULL;
		     i++)
			;
		return i;
	}
	if ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z')) {
		for (i++; i < len && ((t[i] >= 'a' && t[i] <= 'z') ||
				      (t[i] >= 'A' && t[i] <= 'Z'));
		     i++)
			;
		return i;
	}
	return i + 1;
}

/*
 * Where a parse error is: the start of the token at fault, knowing that
 * yajl, fed one byte at a time, failed on byte e.  That byte belongs to
 * the faulty token (a string's closing quote, a bracket...), except when
 * it only ended a number: yajl cannot know a number ended before it sees
 * the next byte, so then the number is at fault.
 */
static size_t conf_culprit(const char *t, size_t len, size_t e)
{
	size_t i = 0, end, last_num = SIZE_MAX, last_num_end = 0;
	bool number;

	while (i < len && i <= e) {
		if (conf_space(t[i])) {
			i++;
			continue;
		}
		end = conf_token_end(t, len, i, &number);
		if (e < end)
			return i == e && last_num != SIZE_MAX &&
					       last_num_end == e
				       ? last_num
				       : i;
		if (number) {
			last_num = i;
			last_num_end = end;
		} else if (t[i] != '/') {
			last_num = SIZE_MAX;
		}
		i = end;
	}
	/* e is a blank (or the end): it can only have ended a number. */
	return last_num != SIZE_MAX ? last_num : e;
}

static int conf_check_syntax(const char *text, size_t len, char *err,
			     size_t errlen)
{
	struct conf_check c = { 0, NULL };
	yajl_handle h = yajl_alloc(&check_callbacks, NULL, &c);
	yajl_status st;
	size_t e = len;
	unsigned line, col;
	char msg[160];
	bool lexical = false;

	if (h == NULL)
		return conf_error(err, errlen, -ENOMEM, "out of memory");
	/* As yajl_tree_parse() does: comments are welcome in a config. */
	yajl_config(h, yajl_allow_comments, 1);
	st = yajl_parse(h, (const unsigned char *)text, len);
	if (st != yajl_status_ok) {
		/*
		 * yajl_get_bytes_consumed() is no guide to where the fault
		 * is (it is off by a token's length in some states): parse
		 * again one byte at a time, to learn which byte failed.
		 */
		yajl_free(h);
		c = (struct conf_check){ 0, NULL };
		if ((h = yajl_alloc(&check_callbacks, NULL, &c)) == NULL)
			return conf_error(err, errlen, -ENOMEM,
					  "out of memory");
		yajl_config(h, yajl_allow_comments, 1);
		for (e = 0; e < len; e++) {
			st = yajl_parse(h, (const unsigned char *)text + e, 1);
			if (st != yajl_status_ok)
				break;
		}
	}
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (st == yajl_status_ok) {
		yajl_free(h);
		return 0;
	}
	if (st == yajl_status_client_canceled)
		snprintf(msg, sizeof(msg), "%s", c.why);
	else
		lexical = conf_yajl_message(h, msg, sizeof(msg));
	yajl_free(h);
	/* A lexical error is at the byte itself (a bad character); a
	 * premature end at the end; anything else at the token. */
	if (!lexical && (e < len || strcmp(msg, "unexpected end of file") != 0))
		e = conf_culprit(text, len, e);
	conf_position(text, e < len ? e : len, &line, &col);
	return conf_error(err, errlen, -EINVAL,
			  "line %u, column %u: syntax error: %s", line, col,
			  msg);
}

int fpool__conf_parse(const char *text, size_t len, struct fpool__conf **out,
		      char *err, size_t errlen)
{
	struct fpool__conf *c;
	char *copy, tree_err[256];
	yajl_val root;
	int r;

	*out = NULL;
	if (len > CONF_MAX_SIZE)
		return conf_error(err, errlen, -EFBIG,
				  "the file is too big (more than %d bytes)",
				  CONF_MAX_SIZE);
	if ((r = conf_check_syntax(text, len, err, errlen)) != 0)
		return r;
	/* yajl_tree_parse() wants a C string; the check above refused any
	 * NUL byte (it is not valid JSON outside a string, nor inside). */
	if ((copy = malloc(len + 1)) == NULL)
		return conf_error(err, errlen, -ENOMEM, "out of memory");
	memcpy(copy, text, len);
	copy[len] = '\0';
	root = yajl_tree_parse(copy, tree_err, sizeof(tree_err));
	free(copy);
	if (root == NULL) /* the syntax was checked: out of memory */
		return conf_error(err, errlen, -ENOMEM, "out of memory");
	if (!YAJL_IS_OBJECT(root)) {
		struct fpool__conf_value v;

		conf_value(root, &v);
		yajl_tree_free(root);
		return conf_error(err, errlen, -EINVAL,
				  "expected a JSON object ({\"key\": value, "
				  "...}), got %s",
				  fpool__conf_kind_name(v.kind));
	}
	/* yajl keeps both copies of a repeated key; say so rather than let
	 * one silently win. */
	for (size_t i = 1; i < root->u.object.len; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(root->u.object.keys[i],
				   root->u.object.keys[j]) == 0) {
				r = conf_error(err, errlen, -EINVAL,
					       "key \"%s\" is given twice",
					       root->u.object.keys[i]);
				yajl_tree_free(root);
				return r;
			}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		yajl_tree_free(root);
		return conf_error(err, errlen, -ENOMEM, "out of memory");
	}
	c->root = root;
	*out = c;
	return 0;
}

int fpool__conf_load(const char *path, struct fpool__conf **out, char *err,
		     size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0, cap;
	ssize_t n;
	int fd, r;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return conf_error(err, errlen, -errno, "%s", strerror(errno));
	if (fstat(fd, &st) != 0) {
		r = conf_error(err, errlen, -errno, "%s", strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		r = conf_error(err, errlen, -EISDIR, "%s", strerror(EISDIR));
		goto out;
	}
	/* Read one byte past the limit, to tell "too big" from "at it"; a
	 * pipe or /dev/stdin has no size, so read until EOF. */
	cap = CONF_MAX_SIZE + 1;
	if ((buf = malloc(cap)) == NULL) {
		r = conf_error(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	while (len < cap) {
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = conf_error(err, errlen, -errno, "%s",
				       strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	r = fpool__conf_parse(buf, len, out, err, errlen);
out:
	free(buf);
	close(fd);
	return r;
}

size_t fpool__conf_size(const struct fpool__conf *c)
{
	return c != NULL ? c->root->u.object.len : 0;
}

static void conf_value(yajl_val node, struct fpool__conf_value *v)
{
	memset(v, 0, sizeof(*v));
	v->impl = node;
	if (YAJL_IS_STRING(node)) {
		v->kind = FPOOL_CONF_STRING;
		v->text = node->u.string;
	} else if (YAJL_IS_NUMBER(node)) {
		/* As written: each setting's own parser judges it, exactly
		 * as it judges the flag's text. */
		v->kind = FPOOL_CONF_NUMBER;
		v->text = node->u.number.r;
	} else if (YAJL_IS_TRUE(node) || YAJL_IS_FALSE(node)) {
		v->kind = FPOOL_CONF_BOOL;
		v->boolean = YAJL_IS_TRUE(node);
		v->text = v->boolean ? "true" : "false";
	} else if (YAJL_IS_ARRAY(node)) {
		v->kind = FPOOL_CONF_ARRAY;
		v->nitems = node->u.array.len;
	} else if (YAJL_IS_OBJECT(node)) {
		v->kind = FPOOL_CONF_OBJECT;
	} else {
		v->kind = FPOOL_CONF_NULL;
		v->text = "null";
	}
}

const char *fpool__conf_key(const struct fpool__conf *c, size_t i,
			    struct fpool__conf_value *v)
{
	conf_value(c->root->u.object.values[i], v);
	return c->root->u.object.keys[i];
}

void fpool__conf_item(const struct fpool__conf_value *array, size_t i,
		      struct fpool__conf_value *out)
{
	yajl_val node = (yajl_val)array->impl;

	conf_value(node->u.array.values[i], out);
}

const char *fpool__conf_kind_name(enum fpool__conf_kind kind)
{
	switch (kind) {
	case FPOOL_CONF_NULL:
		return "null";
	case FPOOL_CONF_BOOL:
		return "true/false";
	case FPOOL_CONF_NUMBER:
		return "a number";
	case FPOOL_CONF_STRING:
		return "a string";
	case FPOOL_CONF_ARRAY:
		return "an array";
	case FPOOL_CONF_OBJECT:
		return "an object";
	}
	return "a value";
}

void fpool__conf_free(struct fpool__conf *c)
{
	if (c == NULL)
		return;
	yajl_tree_free(c->root);
	free(c);
}
