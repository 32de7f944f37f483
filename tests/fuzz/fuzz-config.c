/*
 * libFuzzer target: the config file (forkpool --config FILE.json).  The
 * input is the file's content; it goes through the whole command-line
 * path, fpool__cli_parse() of "forkpool --config FILE", which reads the
 * file, parses the JSON and applies each key as its flag would.
 *
 * The file is a memfd named through /proc/self/fd, so nothing is left
 * behind in /tmp whatever happens.  A successful parse must leave a
 * usable result; a refused file must be a usage error (2) whose one-line
 * message names --config.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int conf_fd = -1;
static char conf_path[64];

static void check(bool ok, const char *what, const char *err)
{
	if (!ok) {
		fprintf(stderr, "fuzz-config: %s (message '%s')\n", what, err);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	conf_fd = memfd_create("fuzz-config.json", MFD_CLOEXEC);
	if (conf_fd < 0) {
		perror("fuzz-config: memfd_create");
		abort();
	}
	snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *argv[] = { "forkpool", "--config", conf_path, NULL };
	struct fpool_cli o;
	char err[512];
	int r;

	if (ftruncate(conf_fd, 0) != 0 ||
	    pwrite(conf_fd, data, size, 0) != (ssize_t)size)
		abort();
	r = fpool__cli_parse(3, argv, &o, err, sizeof(err));
	if (r == 0) {
		check(o.worker != NULL && o.worker[0] != '\0', "no worker", "");
		check(o.nbinds >= 1 && o.binds != NULL, "no address", "");
		check(o.worker_argc >= 1 && o.worker_argv != NULL &&
			      o.worker_argv[0] == o.worker &&
			      o.worker_argv[o.worker_argc] == NULL,
		      "bad worker argv", "");
		check(o.cfg.workers >= 1 && o.cfg.workers <= FPOOL_MAX_WORKERS,
		      "worker count out of range", "");
	} else {
		check(r == 2, "not a usage error", err);
		check(strstr(err, "--config") != NULL,
		      "the message does not name --config", err);
	}
	fpool__cli_free(&o);
	return 0;
}
