/*
 * The one parser of numbers: the strict forms every setting goes through
 * (durations such as "250ms" or "1.5m", bounded integers), whether it
 * comes from a flag, the JSON config file, a control request or a
 * worker's own arguments (fpool_duration_parse()).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

/*
 * Numbers are parsed by hand rather than with strtod()/strtoul(): those
 * skip leading blanks, accept a sign, "nan", "inf", hex and exponents,
 * and strtod() follows LC_NUMERIC, so "0.25" would break under a locale
 * whose decimal point is a comma.  The grammar here is only
 * DIGITS [ "." DIGITS ].
 */

/* Past this the value is out of range for any caller: beyond it only the
 * fact that it is too big matters, and integer overflow is avoided. */
#define BIG_ENOUGH 1000000000000ULL /* 10^12 */

/* Sub-nanosecond digits are dropped: no timer can honour them. */
#define FRAC_DIGITS 9

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Read DIGITS [ "." DIGITS ] at *sp and advance *sp past it.  -EINVAL if
 * there is no such number; *big is set if the integer part is at least
 * BIG_ENOUGH (then *out is meaningless).
 */
static int scan_decimal(const char **sp, double *out, bool *big)
{
	const char *p = *sp;
	uint64_t ip = 0, frac = 0, scale = 1;
	unsigned nfrac = 0;

	*big = false;
	if (!is_digit(*p))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		if (ip >= BIG_ENOUGH)
			*big = true;
		else
			ip = ip * 10 + (uint64_t)(*p - '0');
	}
	if (ip >= BIG_ENOUGH)
		*big = true;
	if (*p == '.') {
		p++;
		if (!is_digit(*p))
			return -EINVAL;
		for (; is_digit(*p); p++) {
			if (nfrac == FRAC_DIGITS)
				continue;
			frac = frac * 10 + (uint64_t)(*p - '0');
			scale *= 10;
			nfrac++;
		}
	}
	/* Both terms are exact in a double, so "0.25" gives exactly 0.25. */
	*out = (double)ip + (double)frac / (double)scale;
	*sp = p;
	return 0;
}

int fpool__parse_duration(const char *s, double *out)
{
	double v;
	bool big;
	int scale; /* > 0: multiply by it; < 0: divide by -scale */
	int r;

	if (s == NULL)
		return -EINVAL;
	r = scan_decimal(&s, &v, &big);
	if (r < 0)
		return r;
	if (strcmp(s, "") == 0 || strcmp(s, "s") == 0)
		scale = 1;
	else if (strcmp(s, "ms") == 0)
		scale = -1000; /* 0.001 is inexact; v / 1000 rounds once */
	else if (strcmp(s, "m") == 0)
		scale = 60;
	else
		return -EINVAL;
	if (big)
		return -ERANGE;
	v = scale > 0 ? v * scale : v / -scale;
	if (!(v > 0) || v > FPOOL_MAX_DURATION)
		return -ERANGE;
	*out = v;
	return 0;
}

int fpool_duration_parse(const char *s, double *seconds)
{
	return fpool__parse_duration(s, seconds);
}

bool fpool__all_digits(const char *s)
{
	if (s == NULL || *s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!is_digit(*s))
			return false;
	return true;
}

int fpool__parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	bool big = false;

	/* The whole string is checked first, so "99999999999999999999x" is
	 * malformed (-EINVAL) rather than out of range. */
	if (!fpool__all_digits(s))
		return -EINVAL;
	for (; *s != '\0'; s++) {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > BIG_ENOUGH * 1000000) { /* past any max: 10^18 */
			big = true;
			break;
		}
	}
	if (big || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int fpool__parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;
	int r = fpool__parse_u64(s, min, max, &v);

	if (r == 0)
		*out = (unsigned)v;
	return r;
}
