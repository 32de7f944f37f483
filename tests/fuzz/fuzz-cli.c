/*
 * libFuzzer target: the forkpool command line (fpool__cli_parse).  The
 * input is cut at NUL bytes into at most MAX_ARGS arguments after
 * argv[0], as execve() would hand them over ("a\0\0b" is "a", "", "b";
 * an empty input is no argument at all).
 *
 * A successful parse must leave a usable result (a worker, at least one
 * --bind, the worker's argv); a refused one must be a usage error (2)
 * with a message.  fpool__cli_free releases everything either way.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_ARGS 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz-cli: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[MAX_ARGS + 2], *copy, *p, *end;
	struct fpool_cli o;
	char err[256];
	int argc = 0, r;

	/* One NUL more, so the last argument is terminated too. */
	copy = malloc(size + 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	argv[argc++] = "forkpool";
	for (p = copy, end = copy + size; p < end && argc <= MAX_ARGS;) {
		argv[argc++] = p;
		p += strlen(p) + 1;
	}
	argv[argc] = NULL;

	r = fpool__cli_parse(argc, argv, &o, err, sizeof(err));
	if (r == 0) {
		check(o.worker != NULL && o.worker[0] != '\0', "no worker");
		check(o.nbinds >= 1 && o.binds != NULL, "no address");
		check(o.worker_argc >= 1 && o.worker_argv != NULL &&
			      o.worker_argv[0] == o.worker &&
			      o.worker_argv[o.worker_argc] == NULL,
		      "bad worker argv");
		check(o.cfg.workers >= 1 && o.cfg.workers <= FPOOL_MAX_WORKERS,
		      "worker count out of range");
	} else {
		check(r == 2, "not a usage error");
		check(err[0] != '\0', "a usage error without a message");
	}
	fpool__cli_free(&o);
	free(copy);
	return 0;
}
