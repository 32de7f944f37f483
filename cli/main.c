/*
 * forkpool: run a pool of workers from the command line.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/*
 * Socket activation (systemd, systemd-socket-activate): a passed-in socket
 * that matches a --bind serves it (the --bind is then not bound again,
 * and its entry is cleared); with no --bind, every passed-in socket is
 * used as given.  A passed-in socket nothing asked for is closed.
 * 0, or 1 with a message.
 */
static int use_activated(struct fpool_pool *pool, struct fpool_cli *o)
{
	int *fds = NULL, r = 0;
	size_t n = 0;

	if (fpool__listen_activated(&fds, &n) != 0) {
		fprintf(stderr, "forkpool: LISTEN_FDS: unusable sockets passed "
				"in (see the log)\n");
		return 1;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		bool used = o->default_bind;

		for (size_t b = 0; !used && b < o->nbinds; b++) {
			struct fpool__addr a;

			if (o->binds[b] == NULL ||
			    fpool__addr_parse(o->binds[b], &a, NULL) != 0 ||
			    !fpool__listen_matches(fds[i], &a))
				continue;
			o->binds[b] = NULL;
			used = true;
		}
		if (!used) {
			struct fpool__addr a;

			fpool_log(FPOOL_LOG_WARNING,
				  "passed-in socket %s matches no --bind; "
				  "closed",
				  fpool__addr_from_fd(fds[i], &a) == 0 ? a.text
								       : "?");
			close(fds[i]);
			continue;
		}
		if ((r = fpool_pool_listen_fd(pool, fds[i])) != 0) {
			fprintf(stderr, "forkpool: passed-in socket %d: %s\n",
				fds[i], fpool_strerror(r));
			r = 1;
		}
	}
	if (o->default_bind && n > 0)
		o->nbinds = 0; /* the default address is not wanted then */
	free(fds);
	return r;
}

/*
 * --check: what a start would refuse, without binding or forking a
 * worker -- the flags and the config file (parsed already), the accounts,
 * and the worker module, loaded in a test process as a worker would
 * (src/module.c).  A binary upgrade runs the new binary so first.
 */
static int check_only(struct fpool_cli *o)
{
	struct fpool__account acct;
	char why[1024], *real;
	int r;

	if ((r = fpool__account_resolve(o->cfg.user, o->cfg.group, &acct)) !=
	    0) {
		fprintf(stderr, "forkpool: --check: cannot resolve --user or "
				"--group (see above)\n");
		return 2;
	}
	if (o->cfg.worker_module != NULL) {
		r = fpool__module_resolve(o->cfg.worker_module, &real, why,
					  sizeof(why));
		if (r == 0) {
			r = fpool__module_check(real, &acct, o->cfg.user,
						FPOOL_MODULE_CHECK_TIMEOUT, why,
						sizeof(why));
			free(real);
		}
	}
	free(acct.groups);
	if (r != 0) {
		fprintf(stderr, "forkpool: --worker: %s\n", why);
		return 2;
	}
	printf("forkpool: the configuration is usable (worker %s, %u "
	       "workers)\n",
	       o->worker, o->cfg.workers);
	return 0;
}

int main(int argc, char **argv)
{
	struct fpool_cli o;
	struct fpool_pool *pool = NULL;
	struct fpool__state *st = NULL;
	struct fpool__reload reload = { 0 };
	void *handle = NULL;
	char err[1024], *exe = NULL, *cwd = NULL;
	char *args[argc + 1];
	const char *why;
	int r, status = 1;

	if (argc > 1 && strcmp(argv[1], "ctl") == 0)
		return fpool__ctl_main(argc - 1, argv + 1);
	/* A binary upgrade runs the program again as it was started: the
	 * arguments before getopt reorders them, the path and directory of
	 * now (--daemon moves to "/" later). */
	memcpy(args, argv, sizeof(args));
	exe = fpool__cli_exe_path(argv[0], &why);
	cwd = getcwd(NULL, 0);
	if (fpool__cli_parse(argc, argv, &o, err, sizeof(err)) != 0) {
		fprintf(stderr, "forkpool: %s\n", err);
		free(exe);
		free(cwd);
		return 2;
	}
	if (o.help || o.version) {
		if (o.help)
			fpool__cli_usage(stdout);
		else
			printf("forkpool %s\n", FPOOL_VERSION);
		fpool__cli_free(&o);
		free(exe);
		free(cwd);
		return 0;
	}
	if (fpool__module_find(o.worker, o.preload, &o.cfg, &handle, err,
			       sizeof(err)) != 0) {
		fprintf(stderr, "forkpool: %s\n", err);
		status = 2;
		goto out;
	}
	if (o.check) {
		status = check_only(&o);
		goto out;
	}
	fpool_log_set_level(o.log_level);
	if ((r = fpool_log_open(o.log_file, o.log_format)) != 0) {
		fprintf(stderr, "forkpool: --log-file %s: %s\n", o.log_file,
			fpool_strerror(r));
		goto out;
	}
	/* Try the output files here, to name the flag if one cannot be
	 * opened; the pool opens them for good. */
	for (int i = 0; i < 2; i++) {
		const char *path = i ? o.cfg.stderr_file : o.cfg.stdout_file;
		int fd = path ? fpool__open_append(path) : 0;

		if (fd < 0) {
			fprintf(stderr, "forkpool: --%s %s: %s\n",
				i ? "stderr" : "stdout", path,
				fpool_strerror(fd));
			goto out;
		}
		if (path != NULL)
			close(fd);
	}

	/* After a binary upgrade: what the previous image hands over. */
	if (fpool__state_load(&st) != 0)
		goto out;
	if ((r = fpool_pool_new(&pool, &o.cfg)) != 0) {
		fprintf(stderr, "forkpool: cannot create the pool: %s\n",
			fpool_strerror(r));
		goto out;
	}
	/* A worker module that cannot be loaded is a usage error, found
	 * before anything is bound. */
	if (o.cfg.worker_module != NULL &&
	    fpool__pool_module_generation(pool, o.cfg.worker_module) != 0) {
		fprintf(stderr, "forkpool: --worker: %s\n", pool->refused);
		status = 2;
		goto out;
	}
	if (exe == NULL)
		fpool_log(FPOOL_LOG_WARNING,
			  "cannot tell this program's path (%s): no binary "
			  "upgrade",
			  why);
	else if ((r = fpool__upgrade_set_exec(pool, exe, argc, args, cwd)) != 0)
		goto out;
	if ((r = st != NULL ? fpool__cli_adopt_listeners(pool, &o, st)
			    : use_activated(pool, &o)) != 0)
		goto out;
	if ((r = fpool__reload_init(&reload, pool, &o, argc, argv)) != 0) {
		fprintf(stderr,
			"forkpool: cannot tell the current directory: "
			"%s\n",
			fpool_strerror(r));
		goto out;
	}
	for (size_t i = 0; i < o.nbinds; i++) {
		if (o.binds[i] == NULL)
			continue; /* served by a passed-in socket */
		r = fpool_pool_listen(pool, o.binds[i]);
		if (r != 0 && st != NULL && pool->nlisteners > 0) {
			/* A binary upgrade: a pool serves on what it was
			 * handed rather than end over an address it adds. */
			fpool__log_errno(FPOOL_LOG_ERROR, -r,
					 "upgrade: cannot bind --bind %s; "
					 "serving the other addresses",
					 o.binds[i]);
			continue;
		}
		if (r != 0) {
			fprintf(stderr, "forkpool: --bind %s: %s\n", o.binds[i],
				r == -EADDRINUSE ? "address already in use"
						 : fpool_strerror(r));
			goto out;
		}
	}
	if (st != NULL) {
		fpool__pool_adopt(pool, st); /* the pool's now */
		st = NULL;
	}
	r = fpool_pool_run(pool);
	if (r == -ECHILD)
		fprintf(stderr,
			"forkpool: more than %u failed starts within %g s "
			"(--max-restarts, --restart-window): the pool "
			"stopped\n",
			o.cfg.max_restarts, o.cfg.restart_window);
	else if (r == -EEXIST && o.cfg.pidfile != NULL)
		fprintf(stderr,
			"forkpool: --pidfile %s is held by another master\n",
			o.cfg.pidfile);
	else if ((r == -EMFILE || r == -ELOOP) && o.log_file == NULL)
		; /* the log, on stderr, said why in one line */
	else if (r == -EMFILE)
		fprintf(stderr,
			"forkpool: %u workers do not fit the open file limit "
			"(see the log)\n",
			o.cfg.workers);
	else if (r == -ELOOP && o.cfg.pidfile != NULL)
		fprintf(stderr,
			"forkpool: --pidfile %s is a symbolic link; refusing "
			"to follow it\n",
			o.cfg.pidfile);
	else if (r != 0)
		fprintf(stderr, "forkpool: %s\n", fpool_strerror(r));
	else
		status = 0;
out:
	/* Not adopted: its fds close, and the processes handed over stop
	 * when their channels close (or the master exits). */
	fpool__state_free(st);
	fpool_pool_free(pool);
	fpool__reload_free(&reload);
	fpool__log_close();
	free(exe);
	free(cwd);
	if (handle != NULL)
		dlclose(handle);
	fpool__cli_free(&o);
	return status;
}
