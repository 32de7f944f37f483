/*
 * libFuzzer target: a --bind value (fpool__addr_parse), on a
 * NUL-terminated copy of the input as the command line would give it.
 *
 * A parsed address must be one of the three families with a sane length,
 * and its canonical text must parse back to the same socket address; a
 * refused one must say why.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "fpool-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what, const char *input)
{
	if (!ok) {
		fprintf(stderr, "fuzz-address: %s (input '%s')\n", what, input);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fpool__addr a, b;
	const char *why = NULL;
	char *s = malloc(size + 1);
	int r;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	r = fpool__addr_parse(s, &a, &why);
	if (r != 0) {
		check(r == -EINVAL, "an error other than -EINVAL", s);
		check(why != NULL && why[0] != '\0', "no reason given", s);
		free(s);
		return 0;
	}
	check(why == NULL, "a reason given on success", s);
	check(memchr(a.text, '\0', sizeof(a.text)) != NULL,
	      "text not NUL-terminated", s);
	switch (a.ss.ss_family) {
	case AF_INET:
		check(a.len == sizeof(struct sockaddr_in), "bad IPv4 length",
		      s);
		break;
	case AF_INET6:
		check(a.len == sizeof(struct sockaddr_in6), "bad IPv6 length",
		      s);
		break;
	case AF_UNIX:
		check(a.len > offsetof(struct sockaddr_un, sun_path) &&
			      a.len <= sizeof(struct sockaddr_un),
		      "bad unix length", s);
		break;
	default:
		check(false, "unknown family", s);
	}
	r = fpool__addr_parse(a.text, &b, &why);
	check(r == 0, "the canonical text does not parse", s);
	check(b.len == a.len && memcmp(&a.ss, &b.ss, a.len) == 0,
	      "the canonical text is another address", s);
	check(strcmp(a.text, b.text) == 0, "the canonical text is not stable",
	      s);
	free(s);
	return 0;
}
