/*
 * Finding the worker the command line names: a built-in one by name, or a
 * worker module, a shared object exporting FPOOL_WORKER_SYMBOL (a pointer
 * to its struct fpool_worker_def).  Modules resolve the fpool_* functions
 * against the forkpool program, which exports them.
 */
#include <dlfcn.h>
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

static bool looks_like_path(const char *name)
{
	size_t n = strlen(name);

	return strchr(name, '/') != NULL ||
	       (n > 3 && strcmp(name + n - 3, ".so") == 0);
}

int fpool__module_find(const char *name, const struct fpool_worker_def **out,
		       void **handle, char *err, size_t errlen)
{
	const struct fpool_worker_def *const *sym;
	void *h;

	*out = NULL;
	*handle = NULL;
	if (!looks_like_path(name)) {
		for (size_t i = 0; fpool__builtin_workers[i] != NULL; i++) {
			if (strcmp(fpool__builtin_workers[i]->name, name) ==
			    0) {
				*out = fpool__builtin_workers[i];
				return 0;
			}
		}
		snprintf(err, errlen,
			 "--worker: no built-in worker '%s' (see --help; a "
			 "module is given by its path, e.g. ./w.so)",
			 name);
		return -ENOENT;
	}
	/* RTLD_NOW: an unresolved symbol is an error here, not a crash in
	 * a worker later. */
	h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(err, errlen, "--worker: cannot load '%s': %s", name,
			 dlerror());
		return -ENOENT;
	}
	sym = dlsym(h, FPOOL_WORKER_SYMBOL);
	if (sym == NULL || *sym == NULL || (*sym)->main == NULL) {
		snprintf(err, errlen,
			 "--worker: '%s' is not a forkpool worker module: %s",
			 name,
			 sym == NULL ? "no symbol " FPOOL_WORKER_SYMBOL
				     : "its definition has no main");
		dlclose(h);
		return -EINVAL;
	}
	*out = *sym;
	*handle = h;
	return 0;
}
