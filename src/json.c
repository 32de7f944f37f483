/*
 * Small yajl helpers every JSON writer and reader of forkpool shares: the
 * channel, log records, the control socket, `forkpool ctl` and the config
 * file; the check of JSON text before it is parsed (fpool_json_check(),
 * public: the jsonrpc worker uses it too).  And the names of the log
 * levels, which the text log, the JSON log and the channel all spell the
 * same way.
 */
#include <errno.h>
#include <string.h>

#include "fpool-int.h"

static const char *const level_names[] = {
	[FPOOL_LOG_DEBUG] = "debug",
	[FPOOL_LOG_INFO] = "info",
	[FPOOL_LOG_WARNING] = "warning",
	[FPOOL_LOG_ERROR] = "error",
};

const char *fpool__level_name(enum fpool_log_level level)
{
	if ((unsigned)level >= FPOOL_NELEM(level_names))
		return NULL;
	return level_names[level];
}

int fpool_log_level_parse(const char *s, enum fpool_log_level *out)
{
	for (size_t i = 0; i < FPOOL_NELEM(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum fpool_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool fpool__json_strn(yajl_gen g, const char *s, size_t len)
{
	return yajl_gen_string(g, (const unsigned char *)s, len) ==
	       yajl_gen_status_ok;
}

bool fpool__json_str(yajl_gen g, const char *s)
{
	return fpool__json_strn(g, s, strlen(s));
}

bool fpool__json_int(yajl_gen g, long long v)
{
	return yajl_gen_integer(g, v) == yajl_gen_status_ok;
}

bool fpool__json_null(yajl_gen g)
{
	return yajl_gen_null(g) == yajl_gen_status_ok;
}

yajl_val fpool__json_get(yajl_val obj, const char *key)
{
	if (!YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t i = 0; i < obj->u.object.len; i++)
		if (strcmp(obj->u.object.keys[i], key) == 0)
			return obj->u.object.values[i];
	return NULL;
}

/* ---- the check before yajl_tree_parse() --------------------------------- */

/* The code unit written as 4 hex digits at s (either case), or -1. */
static long hex4(const char *s)
{
	long v = 0;

	for (int i = 0; i < 4; i++) {
		char ch = s[i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			v |= ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			v |= ch - 'A' + 10;
		else
			return -1;
	}
	return v;
}

#define IS_HIGH_SURROGATE(u) ((u) >= 0xd800 && (u) <= 0xdbff)
#define IS_LOW_SURROGATE(u)  ((u) >= 0xdc00 && (u) <= 0xdfff)

/* The escape at s[i] (a backslash) inside a string: NULL and *i on its
 * last byte, or why it is refused.  A surrogate pair is one character;
 * anything else that is not a \u escape is yajl's to judge. */
static const char *check_escape(const char *s, size_t len, size_t *i)
{
	long u = *i + 5 < len && s[*i + 1] == 'u' ? hex4(s + *i + 2) : -1;

	if (u == 0)
		return "\\u0000 in a string is not supported";
	if (IS_HIGH_SURROGATE(u) && *i + 11 < len && s[*i + 6] == '\\' &&
	    s[*i + 7] == 'u' && IS_LOW_SURROGATE(hex4(s + *i + 8))) {
		*i += 11;
		return NULL;
	}
	if (IS_HIGH_SURROGATE(u) || IS_LOW_SURROGATE(u))
		return "a string is not Unicode text (the escape of a lone "
		       "surrogate)";
	*i += u >= 0 ? 5 : 1;
	return NULL;
}

/* Past the comment at s[i] ('/'): *i on its last byte.  False if it is
 * not a comment, or never ends (yajl refuses both). */
static bool skip_comment(const char *s, size_t len, size_t *i)
{
	const char *end;

	if (*i + 1 >= len)
		return false;
	if (s[*i + 1] == '/') {
		end = memchr(s + *i, '\n', len - *i);
		*i = end != NULL ? (size_t)(end - s) : len - 1;
		return true;
	}
	if (s[*i + 1] != '*')
		return false;
	for (size_t j = *i + 2; j + 1 < len; j++)
		if (s[j] == '*' && s[j + 1] == '/') {
			*i = j + 1;
			return true;
		}
	return false;
}

const char *fpool_json_check(const char *s, size_t len, unsigned max_depth,
			     unsigned flags)
{
	unsigned depth = 0;
	bool in_str = false;
	const char *why;

	if (!fpool__utf8_valid(s, len))
		return "not UTF-8 text";
	if (memchr(s, '\0', len) != NULL)
		return "a NUL byte";
	for (size_t i = 0; i < len; i++) {
		if (in_str) {
			if (s[i] == '"')
				in_str = false;
			else if (s[i] == '\\' &&
				 (why = check_escape(s, len, &i)) != NULL)
				return why;
			continue;
		}
		switch (s[i]) {
		case '"':
			in_str = true;
			break;
		case '[':
		case '{':
			if (++depth > max_depth)
				return "nested too deeply";
			break;
		case ']':
		case '}':
			if (depth > 0)
				depth--;
			break;
		case '/':
			if (flags & FPOOL_JSON_NO_COMMENTS)
				return "a comment";
			if (!skip_comment(s, len, &i))
				return NULL; /* not JSON: yajl says so */
			break;
		}
	}
	return NULL;
}
