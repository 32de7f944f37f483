/*
 * A new config for a running pool (SIGHUP with the CLI's --config): what
 * can change without a new master is checked first and then applied, so
 * a config that cannot be used changes nothing; the rolling reload that
 * follows gives every slot a worker started with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

static bool same_str(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Settings only a new master can take: said, and left as they are. */
static void report_fixed(const struct fpool_config *now,
			 const struct fpool_config *cfg)
{
	const struct {
		const char *name;
		bool same;
	} fixed[] = {
		{ "user", same_str(now->user, cfg->user) },
		{ "group", same_str(now->group, cfg->group) },
		{ "daemon", !now->daemonize == !cfg->daemonize },
		{ "pidfile", same_str(now->pidfile, cfg->pidfile) },
		{ "control", same_str(now->control_path, cfg->control_path) },
		{ "reuse-port", !now->reuse_port == !cfg->reuse_port },
		{ "reap-all", !now->reap_all == !cfg->reap_all },
	};

	for (size_t i = 0; i < FPOOL_NELEM(fixed); i++)
		if (!fixed[i].same)
			fpool_log(FPOOL_LOG_WARNING,
				  "reload: \"%s\" changed, which needs a new "
				  "master (SIGUSR2): left as it is",
				  fixed[i].name);
}

/* Open the output files that changed (new sinks in out[]), or fail with
 * nothing opened. */
static int open_outputs(struct fpool_pool *pool, const struct fpool_config *cfg,
			struct fpool__sink *out[2])
{
	const char *now[2] = { pool->cfg.stdout_file, pool->cfg.stderr_file };
	const char *want[2] = { cfg->stdout_file, cfg->stderr_file };
	int err;

	out[0] = out[1] = NULL;
	for (int i = 0; i < 2; i++) {
		if (same_str(now[i], want[i]) || want[i] == NULL)
			continue;
		err = fpool__sink_new(&out[i], want[i], -1,
				      i ? "worker stderr file"
					: "worker stdout file");
		if (err == 0 && pool->base != NULL &&
		    (err = fpool__sink_attach(out[i], pool->base)) != 0) {
			fpool__sink_free(out[i]);
			out[i] = NULL;
		}
		if (err != 0) {
			snprintf(pool->refused, sizeof(pool->refused),
				 "cannot open the worker %s file %s: %s",
				 i ? "stderr" : "stdout", want[i],
				 fpool_strerror(err));
			fpool__sink_free(out[0]);
			out[0] = NULL;
			return err;
		}
	}
	return 0;
}

/* Put the new output sinks in place; records queued for an old file go
 * to the new one. */
static void swap_outputs(struct fpool_pool *pool,
			 const struct fpool_config *cfg,
			 struct fpool__sink *out[2])
{
	const char *want[2] = { cfg->stdout_file, cfg->stderr_file };

	for (int i = 0; i < 2; i++) {
		if (out[i] == NULL && want[i] != NULL)
			continue; /* unchanged */
		if (pool->out[i] != NULL) {
			if (out[i] != NULL)
				fpool__sink_take(out[i], pool->out[i]);
			fpool__sink_detach(pool->out[i]);
			fpool__sink_free(pool->out[i]);
		}
		pool->out[i] = out[i]; /* NULL: to the log again */
	}
}

int fpool__pool_reconfigure(struct fpool_pool *pool,
			    const struct fpool_config *arg)
{
	struct fpool_config whole, *cfg = &whole;
	struct fpool_config next;
	struct fpool__sink *out[2];
	double *failures = NULL;
	unsigned long need;
	int err;

	pool->refused[0] = '\0';
	if ((err = fpool__config_copy(&whole, arg)) != 0) {
		snprintf(pool->refused, sizeof(pool->refused),
			 "the new configuration's struct_size is %s",
			 err == -EINVAL ? "not set" : "too large");
		return err;
	}
	if (!fpool__config_valid(cfg)) {
		snprintf(pool->refused, sizeof(pool->refused),
			 "the new configuration is not valid");
		return -EINVAL;
	}
	/* An exec'd program gets the listeners blocking (systemd's
	 * default), a C worker's acceptor wants them non-blocking, and
	 * O_NONBLOCK belongs to the socket they all share: the two kinds
	 * cannot serve side by side, as they would during a reload. */
	if ((cfg->exec_program != NULL) != (pool->cfg.exec_program != NULL)) {
		snprintf(pool->refused, sizeof(pool->refused),
			 "switching between -k exec and another worker needs "
			 "a restart (the listeners' blocking mode differs)");
		return -EINVAL;
	}
	if (pool->state == POOL_RUNNING &&
	    !fpool__pool_fds_fit(pool, cfg->workers, &need)) {
		snprintf(pool->refused, sizeof(pool->refused),
			 "%u workers need up to %lu open files in the "
			 "master, more than its limit %llu",
			 cfg->workers, need, (unsigned long long)pool->nofile);
		return -EMFILE;
	}
	if (cfg->max_restarts != pool->cfg.max_restarts &&
	    cfg->max_restarts > 0 &&
	    (failures = calloc((size_t)cfg->max_restarts + 1,
			       sizeof(*failures))) == NULL) {
		snprintf(pool->refused, sizeof(pool->refused), "out of memory");
		return -ENOMEM;
	}
	/* The module goes last among the checks: it becomes this
	 * generation's only once nothing else can fail. */
	if ((err = open_outputs(pool, cfg, out)) != 0) {
		free(failures);
		return err;
	}
	if (cfg->worker_module != NULL &&
	    (err = fpool__pool_module_generation(pool, cfg->worker_module)) !=
		    0) {
		free(failures);
		fpool__sink_free(out[0]);
		fpool__sink_free(out[1]);
		return err;
	}

	report_fixed(&pool->cfg, cfg);
	/* Everything else is the new config's. */
	next = *cfg;
	next.user = pool->cfg.user;
	next.group = pool->cfg.group;
	next.daemonize = pool->cfg.daemonize;
	next.pidfile = pool->cfg.pidfile;
	next.control_path = pool->cfg.control_path;
	next.reuse_port = pool->cfg.reuse_port;
	next.reap_all = pool->cfg.reap_all;
	if (cfg->worker_module == NULL) {
		free(pool->module);
		pool->module = NULL;
	}
	if (cfg->max_restarts != pool->cfg.max_restarts) {
		/* A new limit counts from now. */
		free(pool->failures);
		pool->failures = failures;
		pool->nfailures = pool->failures_at = 0;
	}
	swap_outputs(pool, cfg, out);
	if (next.check_interval != pool->cfg.check_interval) {
		pool->cfg.check_interval = next.check_interval;
		if (pool->check_ev != NULL)
			(void)fpool__pool_check_timer(pool); /* logged */
	}
	pool->cfg = next;
	fpool__pool_spawn_base(pool);
	if (cfg->workers != fpool_pool_size(pool) &&
	    (err = fpool__pool_scale(pool, cfg->workers)) != 0)
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "reload: scaling to %u workers", cfg->workers);
	pool->cfg.workers = cfg->workers;
	return 0;
}
