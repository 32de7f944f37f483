/*
 * libFuzzer target: the number parsers every setting goes through,
 * fpool__parse_duration and fpool__parse_uint, on a NUL-terminated copy
 * of the input (as a flag's value or a config string would be).
 *
 * Their contracts are checked as well: a duration is in (0, one week];
 * an integer is in [min, max] and was written with digits only.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what, const char *input)
{
	if (!ok) {
		fprintf(stderr, "fuzz-duration: %s (input '%s')\n", what,
			input);
		abort();
	}
}

static void try_uint(const char *s, unsigned min, unsigned max)
{
	unsigned v = 12345;
	int r = fpool__parse_uint(s, min, max, &v);

	if (r == 0) {
		check(v >= min && v <= max, "integer out of its bounds", s);
		check(s[0] != '\0' && strspn(s, "0123456789") == strlen(s),
		      "integer accepted with a non-digit", s);
		/* Digits only and small enough, so strtoul agrees. */
		check(strtoul(s, NULL, 10) == v, "integer misread", s);
	} else {
		check(r == -EINVAL || r == -ERANGE, "unexpected error", s);
		check(v == 12345, "output written on failure", s);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	double d = -1;
	int r;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	r = fpool__parse_duration(s, &d);
	if (r == 0)
		check(d > 0 && d <= FPOOL_MAX_DURATION, "duration out of range",
		      s);
	else
		check((r == -EINVAL || r == -ERANGE) && d == -1,
		      "unexpected error, or output written on failure", s);
	try_uint(s, 0, UINT_MAX);
	try_uint(s, 1, FPOOL_MAX_WORKERS);
	try_uint(s, 0, 65535);
	free(s);
	return 0;
}
