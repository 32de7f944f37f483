/*
 * A line the jsonrpc worker received, up to a request for methods.c: the
 * prescan of what yajl_tree cannot take, the parse, and the checks that
 * make it a request or a JSON-RPC error.
 */
#include <string.h>

#include "rpc-int.h"

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

/*
 * What yajl_tree cannot take: nesting deeper than RPC_MAX_DEPTH, a
 * \u0000 escape in a string (its strings end at the first NUL, so the
 * value would change), and the escape of a lone surrogate.  yajl decodes
 * a high surrogate not followed by a low one into something else ("?",
 * or with the next escape into a character never sent: "\ud800\u0041"
 * becomes U+10041) and a lone low one into bytes that are not UTF-8, so
 * the decoded tree cannot tell; the line still can.  Strings and comments
 * (yajl_tree_parse allows them) are skipped; anything that is not JSON
 * is left to yajl.  Returns the reason for a refusal, or NULL.
 */
static const char *prescan(const char *s, size_t len)
{
	int depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		if (in_str) {
			if (s[i] == '"') {
				in_str = false;
			} else if (s[i] == '\\' && i + 1 < len) {
				long u = s[i + 1] == 'u' && i + 5 < len
						 ? hex4(s + i + 2)
						 : -1;

				if (u == 0)
					return "\\u0000 in a string is not "
					       "supported";
				if (IS_HIGH_SURROGATE(u) && i + 11 < len &&
				    s[i + 6] == '\\' && s[i + 7] == 'u' &&
				    IS_LOW_SURROGATE(hex4(s + i + 8))) {
					i += 11; /* a pair: one character */
					continue;
				}
				if (IS_HIGH_SURROGATE(u) || IS_LOW_SURROGATE(u))
					return "a string is not Unicode text "
					       "(the escape of a lone "
					       "surrogate)";
				/* Past the escape: a backslash, 'u' and four
				 * hex digits, or a backslash and one character
				 * (yajl judges it). */
				i += u >= 0 ? 5 : 1;
			}
			continue;
		}
		switch (s[i]) {
		case '"':
			in_str = true;
			break;
		case '[':
		case '{':
			if (++depth > RPC_MAX_DEPTH)
				return "nested too deeply";
			break;
		case ']':
		case '}':
			depth--;
			break;
		case '/':
			if (i + 1 < len && s[i + 1] == '/')
				return NULL; /* a comment to the end */
			if (i + 1 < len && s[i + 1] == '*') {
				const char *end = NULL;

				for (size_t j = i + 2; j + 1 < len; j++)
					if (s[j] == '*' && s[j + 1] == '/') {
						end = s + j;
						break;
					}
				if (end == NULL)
					return NULL; /* yajl rejects it */
				i = (size_t)(end - s) + 1;
			}
			break;
		default:
			break;
		}
	}
	return NULL;
}

/* Every string (and object key) in v is well-formed UTF-8.  yajl lets
 * some ill-formed raw bytes through (and would turn the escape of a lone
 * surrogate into such bytes, had prescan not refused it): written back,
 * they would make a reply that is not JSON text. */
static bool tree_is_utf8(yajl_val v)
{
	size_t i;

	if (YAJL_IS_STRING(v))
		return fpool_utf8_valid(v->u.string, strlen(v->u.string));
	if (YAJL_IS_ARRAY(v)) {
		for (i = 0; i < v->u.array.len; i++)
			if (!tree_is_utf8(v->u.array.values[i]))
				return false;
	} else if (YAJL_IS_OBJECT(v)) {
		for (i = 0; i < v->u.object.len; i++)
			if (!fpool_utf8_valid(v->u.object.keys[i],
					      strlen(v->u.object.keys[i])) ||
			    !tree_is_utf8(v->u.object.values[i]))
				return false;
	}
	return true;
}

/* Answer one line (NUL-terminated, newline removed). */
void rpc_handle_line(struct rpc_conn *c, char *line, size_t len)
{
	struct rpc *r = c->rpc;
	char err[1024];
	const char *why;
	yajl_val req = NULL;
	long ms = -1;
	bool ok = true, reply = true;

	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	if (strspn(line, " \t") == len)
		return; /* a blank line is no request */
	r->requests++;
	fpool_worker_count_requests(r->w, 1);
	if (memchr(line, '\0', len) != NULL) {
		ok = rpc_gen_error(r->g, RPC_PARSE_ERROR, "Parse error",
				   "a NUL byte in the line", NULL);
	} else if ((why = prescan(line, len)) != NULL) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   why, NULL);
	} else if ((req = yajl_tree_parse(line, err, sizeof(err))) == NULL) {
		/* The first line of yajl's message; the rest quotes the
		 * input. */
		err[strcspn(err, "\n")] = '\0';
		ok = rpc_gen_error(r->g, RPC_PARSE_ERROR, "Parse error", err,
				   NULL);
	} else if (!YAJL_IS_OBJECT(req)) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   "a request is a JSON object", NULL);
	} else if (!tree_is_utf8(req)) {
		ok = rpc_gen_error(r->g, RPC_INVALID_REQUEST, "Invalid Request",
				   "a string is not Unicode text (ill-formed "
				   "UTF-8, or the escape of a lone surrogate)",
				   NULL);
	} else {
		reply = rpc_handle_request(r, req, &ms, &ok);
	}
	if (reply && !ok) {
		fpool_log(FPOOL_LOG_ERROR, "jsonrpc: cannot generate a reply");
		ms = -1;
		ok = rpc_gen_error(r->g, RPC_INTERNAL_ERROR, "Internal error",
				   NULL, NULL);
	}
	if (reply && ok)
		rpc_conn_reply(c, ms);
	yajl_tree_free(req);
	rpc_gen_shrink(r);
}
