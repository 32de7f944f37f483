/*
 * The master's open file limit: raised at start, and the pool held to it
 * at start and on every scale, never found short half-way through the
 * forks.
 */
#include <errno.h>
#include <sys/resource.h>

#include "fpool-int.h"

/*
 * File descriptors the master needs with `workers` slots: each worker
 * process costs FPOOL_FDS_PER_PROC (its channel, pidfd and two output
 * pipes), and a slot may hold two processes at once (a rolling reload or
 * a recycle keeps the old worker draining beside its replacement); then
 * the listeners, the control socket's clients and the master's own
 * (stdio, log files, loop, signals, pidfile...).
 */
static unsigned long pool_fds_needed(const struct fpool_pool *pool,
				     unsigned workers)
{
	return (unsigned long)workers * 2 * FPOOL_FDS_PER_PROC +
	       pool->nlisteners + pool->npreserved +
	       (pool->cfg.control_path ? FPOOL_CONTROL_CLIENTS + 1 : 0) +
	       FPOOL_FDS_RESERVE;
}

/*
 * At start, raise the soft RLIMIT_NOFILE to the hard limit (as nginx's
 * worker_rlimit_nofile and systemd do; workers inherit it), and refuse
 * to start a pool that cannot fit, rather than fail half-way through the
 * forks.  0, or -EMFILE (logged).
 */
int fpool__pool_fd_limit(struct fpool_pool *pool, unsigned workers)
{
	struct rlimit rl;
	unsigned long need = pool_fds_needed(pool, workers);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "getrlimit(RLIMIT_NOFILE)");
		return 0;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "cannot raise the open file limit "
					 "from %llu to %llu",
					 (unsigned long long)was,
					 (unsigned long long)rl.rlim_max);
			rl.rlim_cur = was;
		}
	}
	pool->nofile = rl.rlim_cur;
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
		fpool_log(FPOOL_LOG_ERROR,
			  "%u workers need up to %lu open files in the master, "
			  "but its limit is %llu (RLIMIT_NOFILE, hard limit "
			  "%llu): raise it (ulimit -n, LimitNOFILE=) or run "
			  "fewer workers",
			  workers, need, (unsigned long long)rl.rlim_cur,
			  (unsigned long long)rl.rlim_max);
		return -EMFILE;
	}
	return 0;
}

int fpool__pool_fds_fit(const struct fpool_pool *pool, unsigned workers,
			unsigned long *need)
{
	*need = pool_fds_needed(pool, workers);
	return pool->nofile == 0 || pool->nofile == RLIM_INFINITY ||
	       *need <= pool->nofile;
}
