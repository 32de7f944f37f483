/*
 * Small yajl helpers every JSON writer and reader of forkpool shares: the
 * channel, log records, the control socket, `forkpool ctl` and the config
 * file.  (The built-in workers, which use only the public API, have their
 * own.)  And the names of the log levels, which the text log, the JSON
 * log and the channel all spell the same way.
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
