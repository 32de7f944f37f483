/*
 * SIGHUP (and `ctl reload`) with --config: the command line is parsed
 * again, which reads the file again (defaults < file < flags, as at
 * start), and what changed is applied before the rolling reload: pool
 * size, worker and its arguments, timeouts, recycling, log level, format
 * and file, output files, listeners added or removed.  A file that does
 * not parse or validate, a module that does not load, an address that
 * cannot be bound: nothing changes, and the log and `ctl reload` say why.
 * What only a new master can change is said and left (src/reconfig.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* The listener of the pool serving bind address `b`, or -1. */
static ssize_t listener_of(const struct fpool_pool *pool, const char *b)
{
	struct fpool__addr a;

	if (fpool__addr_parse(b, &a, NULL) != 0)
		return -1;
	for (size_t i = 0; i < pool->nlisteners; i++)
		if (fpool__listen_matches(pool->listeners[i].fd, &a))
			return (ssize_t)i;
	return -1;
}

/* Bind the addresses of `n` the pool does not listen on yet; on failure
 * close those just bound.  *added gets how many were (the last ones). */
static int bind_new(struct fpool_pool *pool, const struct fpool_cli *n,
		    size_t *added, char *why, size_t len)
{
	size_t before = pool->nlisteners;
	int err = 0;

	for (size_t i = 0; i < n->nbinds && err == 0; i++) {
		if (listener_of(pool, n->binds[i]) >= 0)
			continue;
		err = fpool_pool_listen(pool, n->binds[i]);
		if (err != 0)
			snprintf(why, len, "--bind %s: %s", n->binds[i],
				 err == -EADDRINUSE ? "address already in use"
						    : fpool_strerror(err));
	}
	if (err != 0)
		while (pool->nlisteners > before)
			fpool__pool_unlisten(pool, pool->nlisteners - 1);
	*added = pool->nlisteners - before;
	return err;
}

/* Close the listeners no address of `n` names. */
static void unbind_old(struct fpool_pool *pool, const struct fpool_cli *n)
{
	for (size_t i = pool->nlisteners; i-- > 0;) {
		bool wanted = false;

		for (size_t b = 0; b < n->nbinds && !wanted; b++) {
			struct fpool__addr a;

			wanted =
				fpool__addr_parse(n->binds[b], &a, NULL) == 0 &&
				fpool__listen_matches(pool->listeners[i].fd,
						      &a);
		}
		if (!wanted && pool->nlisteners > 1)
			fpool__pool_unlisten(pool, i);
	}
}

/* Parse the command line again, from the directory it was given in
 * (a daemon has since moved to "/"). */
static int reparse(struct fpool__reload *r, struct fpool_cli *n, char *why,
		   size_t len)
{
	int err;

	if (r->cwd != NULL && chdir(r->cwd) < 0) {
		snprintf(why, len,
			 "cannot go back to %s to read the config: %s", r->cwd,
			 strerror(errno));
		return -errno;
	}
	err = fpool__cli_parse(r->argc, r->argv, n, why, len);
	if (r->cwd != NULL && chdir("/") < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "chdir /");
	return err != 0 ? -EINVAL : 0;
}

/* Which worker the new command line asks for: a built-in's definition
 * or a module's path; the master's preloaded module cannot change. */
static int pick_worker(struct fpool__reload *r, struct fpool_cli *n,
		       const struct fpool_pool *pool, char *why, size_t len)
{
	void *handle;

	if (r->cur->preload || n->preload) {
		if (strcmp(n->worker, r->cur->worker) != 0 ||
		    n->preload != r->cur->preload)
			fpool_log(FPOOL_LOG_WARNING,
				  "reload: \"worker\" or \"preload\" changed "
				  "with --preload, which needs a new master "
				  "(SIGUSR2): left as it is");
		n->cfg.worker = pool->cfg.worker;
		n->cfg.worker_module = pool->cfg.worker_module;
		return 0;
	}
	return fpool__module_find(n->worker, false, &n->cfg, &handle, why, len);
}

static int reconfigure(struct fpool_pool *pool, void *arg)
{
	struct fpool__reload *r = arg;
	struct fpool_cli *n = calloc(1, sizeof(*n));
	char *why = pool->refused;
	size_t len = sizeof(pool->refused), added = 0;
	int err, fd;

	if (n == NULL) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	if ((err = reparse(r, n, why, len)) != 0)
		goto fail; /* the message names the file */
	if ((err = pick_worker(r, n, pool, why, len)) != 0)
		goto fail_with;
	/* A log file that cannot be opened refuses the reload too. */
	fd = n->log_file != NULL ? fpool__open_append(n->log_file) : -1;
	if (fd >= 0) {
		close(fd);
	} else if (n->log_file != NULL) {
		err = fd;
		snprintf(why, len, "--log-file %s: %s", n->log_file,
			 fpool_strerror(err));
		goto fail_with;
	}
	/* With no --bind and sockets passed in (socket activation), those
	 * are the listeners, as at start. */
	for (size_t i = 0; i < pool->nlisteners; i++)
		if (n->default_bind && pool->listeners[i].passed_in)
			n->nbinds = 0;
	if (n->nbinds > 0 && (err = bind_new(pool, n, &added, why, len)) != 0)
		goto fail_with;
	if ((err = fpool__pool_reconfigure(pool, &n->cfg)) != 0) {
		while (added-- > 0)
			fpool__pool_unlisten(pool, pool->nlisteners - 1);
		goto fail_with;
	}
	if (n->nbinds > 0)
		unbind_old(pool, n);
	fpool_log_set_level(n->log_level);
	if ((n->log_file == NULL) != (r->cur->log_file == NULL) ||
	    (n->log_file != NULL && strcmp(n->log_file, r->cur->log_file)) ||
	    n->log_format != r->cur->log_format) {
		err = fpool_log_open(n->log_file, n->log_format);
		if (err != 0)
			fpool__log_errno(FPOOL_LOG_ERROR, -err,
					 "reload: --log-file %s: the old log "
					 "stays",
					 n->log_file ? n->log_file : "stderr");
		else
			fpool_log(FPOOL_LOG_INFO, "reload: the log goes to %s",
				  n->log_file ? n->log_file : "stderr");
	}
	fpool_log(FPOOL_LOG_INFO, "reload: read %s", n->config_file);
	/* The pool's settings that only a new master changes still point
	 * into the first parse, which lives on; the last one can go. */
	if (r->cur != r->first) {
		fpool__cli_free(r->cur);
		free(r->cur);
	}
	r->cur = n;
	return 0;
fail_with : {
	/* Name the file whose settings could not be used. */
	char *s;

	if (asprintf(&s, "with --config %s: %s", n->config_file, why) >= 0) {
		snprintf(why, len, "%s", s);
		free(s);
	}
}
fail:
	fpool__cli_free(n);
	free(n);
	return err;
}

int fpool__reload_init(struct fpool__reload *r, struct fpool_pool *pool,
		       struct fpool_cli *o, int argc, char **argv)
{
	memset(r, 0, sizeof(*r));
	r->argc = argc;
	r->argv = argv;
	r->first = r->cur = o;
	if (o->config_file == NULL)
		return 0; /* nothing to read again */
	if (o->cfg.daemonize && (r->cwd = getcwd(NULL, 0)) == NULL)
		return -errno;
	pool->reconfigure = reconfigure;
	pool->reconfigure_arg = r;
	return 0;
}

void fpool__reload_free(struct fpool__reload *r)
{
	if (r->cur != r->first) {
		fpool__cli_free(r->cur);
		free(r->cur);
	}
	free(r->cwd);
	memset(r, 0, sizeof(*r));
}
