/*
 * Finding the worker the command line names: a built-in one by name, or a
 * worker module, a shared object exporting FPOOL_WORKER_SYMBOL (a pointer
 * to its struct fpool_worker_def), loaded by each worker (src/module.c)
 * or, with --preload, by the master.  Modules resolve the fpool_*
 * functions against the forkpool program, which exports them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

extern const struct fpool_worker_def fpool_echo_worker;
extern const struct fpool_worker_def fpool_http_worker;
extern const struct fpool_worker_def fpool_jsonrpc_worker;

const struct fpool_worker_def *const fpool__builtin_workers[] = {
	&fpool_echo_worker,
	&fpool_http_worker,
	&fpool_jsonrpc_worker,
	NULL,
};

bool fpool__module_is_path(const char *name)
{
	size_t n = strlen(name);

	return strchr(name, '/') != NULL ||
	       (n > 3 && strcmp(name + n - 3, ".so") == 0);
}

int fpool__module_find(const char *name, bool preload, struct fpool_config *cfg,
		       void **handle, char *err, size_t errlen)
{
	char why[1024];

	cfg->worker = NULL;
	cfg->worker_module = NULL;
	cfg->exec_program = NULL;
	*handle = NULL;
	/* -k exec: the program must be there now, as execvp() finds it
	 * (each worker looks it up again at its exec). */
	if (strcmp(name, EXEC_WORKER) == 0) {
		char path[4096];
		int r;

		if (cfg->worker_argc < 1 || cfg->worker_argv == NULL) {
			snprintf(err, errlen,
				 "--worker exec: give the program after --");
			return -EINVAL;
		}
		r = fpool__exec_resolve(cfg->worker_argv[0], path,
					sizeof(path));
		if (r != 0) {
			snprintf(err, errlen, "--worker exec: %s: %s",
				 cfg->worker_argv[0],
				 r == -ENOENT && strchr(cfg->worker_argv[0],
							'/') == NULL
					 ? "not found in PATH"
				 : r == -EACCES ? "not an executable file"
						: strerror(-r));
			return r;
		}
		cfg->exec_program = cfg->worker_argv[0];
		return 0;
	}
	if (!fpool__module_is_path(name)) {
		for (size_t i = 0; fpool__builtin_workers[i] != NULL; i++) {
			if (strcmp(fpool__builtin_workers[i]->name, name) ==
			    0) {
				cfg->worker = fpool__builtin_workers[i];
				return 0;
			}
		}
		snprintf(err, errlen,
			 "--worker: no built-in worker '%s' (see --help; a "
			 "module is given by its path, e.g. ./w.so)",
			 name);
		return -ENOENT;
	}
	/* Each worker loads it (the library checks it in a test process
	 * first); with --preload, the master does, once. */
	if (!preload) {
		cfg->worker_module = name;
		return 0;
	}
	if (fpool__module_open(name, &cfg->worker, handle, why, sizeof(why)) !=
	    0) {
		snprintf(err, errlen, "--worker: %s", why);
		return -ENOEXEC;
	}
	return 0;
}
