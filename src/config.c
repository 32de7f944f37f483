/*
 * The pool's defaults (fpool_config_init()); DESIGN.md, "Lifecycle":
 * defaults < JSON config file (cli/conffile.c) < flags (cli/options.c).
 */
#include <string.h>
#include <unistd.h>

#include "fpool-int.h"

void fpool_config_init(struct fpool_config *cfg)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	if (ncpu < 1)
		ncpu = 1;
	if (ncpu > FPOOL_MAX_WORKERS)
		ncpu = FPOOL_MAX_WORKERS;
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
