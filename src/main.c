/*
 * forkpool: run a pool of workers from the command line.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "fpool-int.h"

int main(int argc, char **argv)
{
	struct fpool_cli o;
	struct fpool_pool *pool = NULL;
	void *handle = NULL;
	char err[512];
	int r, status = 1;

	if (fpool__cli_parse(argc, argv, &o, err, sizeof(err)) != 0) {
		fprintf(stderr, "forkpool: %s\n", err);
		return 2;
	}
	if (o.help || o.version) {
		if (o.help)
			fpool__cli_usage(stdout);
		else
			printf("forkpool %s\n", FPOOL_VERSION);
		fpool__cli_free(&o);
		return 0;
	}
	if (fpool__module_find(o.worker, &o.cfg.worker, &handle, err,
			       sizeof(err)) != 0) {
		fprintf(stderr, "forkpool: %s\n", err);
		fpool__cli_free(&o);
		return 2;
	}
	fpool_log_set_level(o.log_level);

	if ((r = fpool_pool_new(&pool, &o.cfg)) != 0) {
		fprintf(stderr, "forkpool: cannot create the pool: %s\n",
			fpool_strerror(r));
		goto out;
	}
	for (size_t i = 0; i < o.nbinds; i++) {
		r = fpool_pool_listen(pool, o.binds[i]);
		if (r != 0) {
			fprintf(stderr, "forkpool: --bind %s: %s\n", o.binds[i],
				r == -EADDRINUSE ? "address already in use"
						 : fpool_strerror(r));
			goto out;
		}
	}
	r = fpool_pool_run(pool);
	if (r != 0)
		fprintf(stderr, "forkpool: %s\n", fpool_strerror(r));
	else
		status = 0;
out:
	fpool_pool_free(pool);
	if (handle != NULL)
		dlclose(handle);
	fpool__cli_free(&o);
	return status;
}
