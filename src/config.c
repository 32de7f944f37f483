/*
 * The pool's defaults (fpool_config_init()); DESIGN.md, "Lifecycle":
 * defaults < JSON config file (cli/conffile.c) < flags (cli/options.c).
 *
 * And the config's ABI (include/forkpool.h, struct fpool_config): the
 * caller's struct may be shorter than ours (an older header) or longer
 * (a newer one); struct_size says which, and the library reads a config
 * only through fpool__config_copy().
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "fpool-int.h"

/* The defaults, into a whole struct of ours. */
static void defaults(struct fpool_config *cfg)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > FPOOL_MAX_WORKERS)
		ncpu = FPOOL_MAX_WORKERS;
	cfg->struct_size = sizeof(*cfg);
	cfg->workers = (unsigned)ncpu;
	cfg->worker_timeout = 30;
	cfg->graceful_timeout = 30;
	cfg->check_interval = 1;
	cfg->min_uptime = 1;
	cfg->output_lines = 200;
	cfg->restart_window = 60;
	cfg->worker = NULL;
	cfg->worker_argc = 0;
	cfg->worker_argv = NULL;
}

void fpool_config_init_size(struct fpool_config *cfg, size_t size)
{
	struct fpool_config d;

	if (size < sizeof(cfg->struct_size))
		return; /* not even room for the size: nothing to write */
	defaults(&d);
	d.struct_size = size;
	/* Only the caller's bytes: a shorter struct ends before ours. */
	memcpy(cfg, &d, size < sizeof(d) ? size : sizeof(d));
	/* A longer one: its fields we do not know start at 0. */
	if (size > sizeof(d))
		memset((char *)cfg + sizeof(d), 0, size - sizeof(d));
}

int fpool__config_copy(struct fpool_config *dst, const struct fpool_config *src)
{
	size_t size = src->struct_size;

	if (size < sizeof(src->struct_size))
		return -EINVAL; /* never went through fpool_config_init() */
	/* Fields we do not know must be left at 0 (their default): one
	 * that was set would be dropped. */
	for (size_t i = sizeof(*dst); i < size; i++)
		if (((const unsigned char *)src)[i] != 0)
			return -E2BIG;
	defaults(dst);
	memcpy(dst, src, size < sizeof(*dst) ? size : sizeof(*dst));
	dst->struct_size = sizeof(*dst);
	return 0;
}

bool fpool__config_valid(const struct fpool_config *cfg)
{
	return cfg->workers >= 1 && cfg->workers <= FPOOL_MAX_WORKERS &&
	       (cfg->worker != NULL) + (cfg->worker_module != NULL) +
			       (cfg->exec_program != NULL) ==
		       1 &&
	       (cfg->worker == NULL || cfg->worker->main != NULL) &&
	       cfg->worker_timeout > 0 && cfg->graceful_timeout > 0 &&
	       cfg->check_interval > 0 && cfg->min_uptime >= 0;
}
