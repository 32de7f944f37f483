/*
 * The master: the pool of slots, the master's signals, the check timer and
 * the order of start-up and shutdown.
 *
 * Signals are libevent signal events on the master's base, so their
 * callbacks are ordinary loop callbacks that may change state and fork;
 * nothing runs in a real signal handler (pgbouncer's and httpd's habit).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

/* Open the --stdout/--stderr files, or open them again (SIGUSR1).  On
 * failure the files already open stay in use.  0 or -errno. */
static int pool_open_output(struct fpool_pool *pool)
{
	static const char *const what[2] = { "worker stdout file",
					     "worker stderr file" };
	const char *paths[2] = { pool->cfg.stdout_file, pool->cfg.stderr_file };
	int result = 0;

	for (int i = 0; i < 2; i++) {
		int err;

		if (paths[i] == NULL)
			continue;
		if (pool->out[i] != NULL)
			err = fpool__sink_reopen(pool->out[i]);
		else
			err = fpool__sink_new(&pool->out[i], paths[i], -1,
					      what[i]);
		if (err != 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, -err,
					 "cannot open worker %s file %s",
					 i ? "stderr" : "stdout", paths[i]);
			result = err;
		}
	}
	return result;
}

int fpool_pool_new(struct fpool_pool **out, const struct fpool_config *arg)
{
	struct fpool_config whole, *cfg = &whole;
	struct fpool_pool *pool;
	int err = -ENOMEM;

	*out = NULL;
	/* The caller's struct may be older or newer than ours (config.c). */
	if ((err = fpool__config_copy(&whole, arg)) != 0)
		return err;
	if (!fpool__config_valid(cfg))
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return -ENOMEM;
	pool->cfg = *cfg;
	pool->state = POOL_NEW;
	pool->reload_slot = -1;
	pool->master_pid = getpid();
	pool->pidfile_fd = -1;
	pool->shm_fd = -1;
	fpool__supervise_init(pool);
	/* Recycling jitter and the like: a different draw per master. */
	srandom((unsigned)getpid() ^ (unsigned)time(NULL));
	pool->base = event_base_new();
	if (pool->base == NULL)
		goto err;
	pool->shm = fpool__activity_map(&pool->shm_len, &pool->shm_fd);
	if ((err = fpool__account_resolve(cfg->user, cfg->group,
					  &pool->account)) != 0)
		goto err;
	if (cfg->max_restarts > 0) {
		pool->failures = calloc((size_t)cfg->max_restarts + 1,
					sizeof(*pool->failures));
		if (pool->failures == NULL) {
			err = -ENOMEM;
			goto err;
		}
	}
	if ((err = pool_open_output(pool)) != 0)
		goto err;
	if ((err = fpool__pool_make_slots(pool, cfg->workers)) != 0)
		goto err;
	*out = pool;
	return 0;
err:
	fpool_pool_free(pool);
	return err;
}

int fpool__pool_add_listener(struct fpool_pool *pool, int fd,
			     const struct fpool__addr *a, bool owned_path)
{
	struct fpool__listener *v, *l;

	v = realloc(pool->listeners, (pool->nlisteners + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	pool->listeners = v;
	l = &pool->listeners[pool->nlisteners++];
	memset(l, 0, sizeof(*l));
	l->fd = fd;
	l->addr = *a;
	if (owned_path && a->ss.ss_family == AF_UNIX) {
		l->unlink_path =
			strdup(((const struct sockaddr_un *)&a->ss)->sun_path);
		if (l->unlink_path == NULL)
			fpool_log(FPOOL_LOG_WARNING,
				  "out of memory: %s will not be removed at "
				  "exit",
				  a->text);
	}
	return 0;
}

int fpool_pool_listen_fd(struct fpool_pool *pool, int fd)
{
	struct fpool__addr a;
	int err, fl;

	if ((err = fpool__addr_from_fd(fd, &a)) != 0)
		return err;
	/* Like our own sockets: gone in exec'd children, and read by an
	 * event loop. */
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ||
	    (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	/* Not ours to remove: whoever made it (systemd) owns the file. */
	if ((err = fpool__pool_add_listener(pool, fd, &a, false)) != 0)
		return err;
	pool->listeners[pool->nlisteners - 1].passed_in = true;
	fpool_log(FPOOL_LOG_INFO, "listening on %s (passed in)", a.text);
	return 0;
}

int fpool_pool_listen(struct fpool_pool *pool, const char *addr)
{
	struct fpool__addr a;
	char name[160];
	const char *why = NULL;
	int fd, err;

	if (fpool__addr_parse(addr, &a, &why) != 0)
		return -EINVAL;
	if (pool->cfg.reuse_port && a.ss.ss_family != AF_UNIX)
		/* Reserve the address only; each worker listens on its own
		 * socket (reuseport.c). */
		err = fpool__reuseport_socket((struct sockaddr *)&a.ss, a.len,
					      0, &fd);
	else
		err = fpool__addr_listen(&a, SOMAXCONN, &fd);
	if (err != 0)
		return err;
	if ((err = fpool__pool_add_listener(pool, fd, &a, true)) != 0) {
		close(fd);
		return err;
	}
	pool->listeners[pool->nlisteners - 1].tcp_owned =
		!pool->cfg.reuse_port && a.ss.ss_family != AF_UNIX;
	fpool__sockname(fd, name, sizeof(name));
	fpool_log(FPOOL_LOG_INFO, "listening on %s%s", name,
		  pool->cfg.reuse_port && a.ss.ss_family != AF_UNIX
			  ? " (a socket per worker, SO_REUSEPORT)"
			  : "");
	return 0;
}

/* Close a listener of ours and remove its unix socket file. */
static void listener_close(struct fpool__listener *l)
{
	if (l->fd >= 0 && close(l->fd) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "closing listener %s", l->addr.text);
	l->fd = -1;
	if (l->unlink_path != NULL && unlink(l->unlink_path) < 0 &&
	    errno != ENOENT)
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "removing %s",
				 l->unlink_path);
}

void fpool__pool_unlisten(struct fpool_pool *pool, size_t i)
{
	struct fpool__listener *l = &pool->listeners[i];

	fpool_log(FPOOL_LOG_INFO,
		  "no longer listening on %s (the workers that hold it close "
		  "it as they are replaced)",
		  l->addr.text);
	listener_close(l);
	free(l->unlink_path);
	memmove(l, l + 1, (pool->nlisteners - i - 1) * sizeof(*l));
	pool->nlisteners--;
	if (pool->state == POOL_RUNNING)
		fpool__pool_spawn_base(pool);
}

int fpool_preserve_fd(struct fpool_pool *pool, int fd)
{
	int *v;

	if (fd < 0)
		return -EBADF;
	v = realloc(pool->preserved, (pool->npreserved + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	v[pool->npreserved++] = fd;
	pool->preserved = v;
	return 0;
}

int fpool_pool_on_start(struct fpool_pool *pool, fpool_pool_hook_cb cb,
			void *arg)
{
	return fpool__hooks_add(&pool->on_start, (void (*)(void))cb, arg);
}

int fpool_pool_on_shutdown(struct fpool_pool *pool, fpool_pool_hook_cb cb,
			   void *arg)
{
	return fpool__hooks_add(&pool->on_shutdown, (void (*)(void))cb, arg);
}

struct event_base *fpool_pool_base(struct fpool_pool *pool)
{
	return pool->base;
}

static void pool_check_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fpool__pool_check(arg);
}

static void pool_events_del(struct fpool_pool *pool)
{
	fpool__signals_remove(pool);
	if (pool->check_ev != NULL) {
		event_free(pool->check_ev);
		pool->check_ev = NULL;
	}
}

int fpool__pool_check_timer(struct fpool_pool *pool)
{
	struct timeval tv = fpool__tv(pool->cfg.check_interval);

	if (pool->check_ev == NULL)
		pool->check_ev = event_new(pool->base, -1, EV_PERSIST,
					   pool_check_cb, pool);
	if (pool->check_ev == NULL || event_add(pool->check_ev, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "cannot start the check timer");
		return -ENOMEM;
	}
	return 0;
}

static int pool_events_add(struct fpool_pool *pool)
{
	int err;

	if ((err = fpool__signals_install(pool)) != 0)
		return err;
	pool->check_last = fpool__now();
	return fpool__pool_check_timer(pool);
}

static int run_hooks(struct fpool_pool *pool, struct fpool__hooks *h,
		     const char *what)
{
	for (size_t i = 0; i < h->n; i++) {
		fpool_pool_hook_cb cb = (fpool_pool_hook_cb)h->v[i].fn;
		int r = cb(pool, h->v[i].arg);

		if (r != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "master %s hook %zu failed "
				  "(%d)",
				  what, i + 1, r);
			return r;
		}
	}
	return 0;
}

int fpool__pool_take_pidfile(struct fpool_pool *pool)
{
	pid_t holder = 0;
	int err;

	if (pool->cfg.pidfile == NULL)
		return 0;
	err = fpool__pidfile_take(pool->cfg.pidfile, &pool->pidfile_fd,
				  &holder);
	if (err == -EEXIST)
		fpool_log(FPOOL_LOG_ERROR, "pidfile %s is held by pid %d",
			  pool->cfg.pidfile, (int)holder);
	else if (err == -ELOOP)
		fpool_log(FPOOL_LOG_ERROR,
			  "pidfile %s is a symbolic link; refusing to follow "
			  "it (remove it, or name the file it points to)",
			  pool->cfg.pidfile);
	else if (err != 0)
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot take pidfile %s", pool->cfg.pidfile);
	return err;
}

/* Daemonize (-D) and take the pidfile, in DESIGN.md's order: after the
 * listeners are bound, before any signal event and any worker.  0, or
 * -errno, logged. */
static int pool_detach(struct fpool_pool *pool, int *ready_fd)
{
	int err;

	if (pool->cfg.daemonize) {
		err = fpool__daemonize(ready_fd);
		if (err != 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, -err,
					 "cannot become a daemon");
			return err;
		}
		/* The loop was made by the original process: give the
		 * daemon an epoll instance of its own. */
		if (event_reinit(pool->base) != 0) {
			fpool_log(FPOOL_LOG_ERROR, "event_reinit failed after "
						   "daemonizing");
			return -EIO;
		}
	}
	pool->master_pid = getpid();
	return fpool__pool_take_pidfile(pool);
}

/* What every worker of the pool is told (struct fpool__spawn); proc.c
 * adds what is its own. */
void fpool__pool_spawn_base(struct fpool_pool *pool)
{
	struct fpool__spawn *sp = &pool->spawn;

	memset(sp, 0, sizeof(*sp));
	sp->def = pool->cfg.worker;
	sp->module = pool->module;
	sp->argc = pool->cfg.worker_argc;
	sp->argv = pool->cfg.worker_argv;
	sp->master_pid = pool->master_pid;
	sp->nlisteners = pool->nlisteners;
	sp->reuse_port = pool->cfg.reuse_port;
	sp->preserved = pool->preserved;
	sp->npreserved = pool->npreserved;
	sp->uid = pool->account.uid;
	sp->gid = pool->account.gid;
	sp->groups = pool->account.groups;
	sp->ngroups = pool->account.ngroups;
	sp->user = pool->cfg.user;
	sp->graceful_timeout = pool->cfg.graceful_timeout;
	sp->heartbeat_interval = pool->cfg.check_interval;
	if (sp->heartbeat_interval > pool->cfg.worker_timeout / 3)
		sp->heartbeat_interval = pool->cfg.worker_timeout / 3;
	sp->shm = pool->shm;
	sp->shm_len = pool->shm_len;
	sp->exec_program = pool->cfg.exec_program;
	sp->exec_notify = pool->cfg.exec_notify != 0;
	sp->worker_timeout = pool->cfg.worker_timeout;
	/* The master's signal events: the worker must free them for its
	 * own loop to take the signals, and may (worker.c says why). */
	sp->forget = pool->sigev;
	sp->nforget = pool->nsigev;
	sp->keep = pool;
}

int fpool_pool_run(struct fpool_pool *pool)
{
	int err, ready_fd = -1;

	if (pool->state != POOL_NEW)
		return -EALREADY;
	if (pool->cfg.worker_module != NULL && pool->module == NULL &&
	    (err = fpool__pool_module_generation(
		     pool, pool->cfg.worker_module)) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "%s", pool->refused);
		goto out;
	}
	/* After a binary upgrade the process is already the daemon, and
	 * holds the pidfile (upgrade.c). */
	if ((err = fpool__upgrade_adopting(pool)
			   ? fpool__upgrade_adopt_detach(pool)
			   : pool_detach(pool, &ready_fd)) != 0)
		goto out;
	/* The process is what it stays now (a daemon has its pid). */
	fpool__pool_reap_mode(pool);
	fpool__log_libevent();
	if ((err = fpool__pool_fd_limit(pool, fpool_pool_size(pool))) != 0)
		goto out;
	if ((err = pool_events_add(pool)) != 0)
		goto out;
	/* From here on the log and the output files never block the loop. */
	fpool__log_attach(pool->base);
	for (int i = 0; i < 2; i++)
		if (pool->out[i] != NULL &&
		    fpool__sink_attach(pool->out[i], pool->base) != 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "the worker %s file is written synchronously "
				  "(out of memory)",
				  i ? "stderr" : "stdout");
	fpool__sink_on_pressure(fpool__pool_pressure, pool);
	if (run_hooks(pool, &pool->on_start, "on_start") != 0) {
		err = -ECANCELED;
		goto out;
	}
	pool->started = fpool__now();
	if (fpool__upgrade_adopting(pool)) {
		if ((err = fpool__upgrade_adopt_control(pool)) != 0)
			goto out;
	} else if (pool->cfg.control_path != NULL &&
		   (err = fpool__control_open(pool, pool->cfg.control_path)) !=
			   0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot open the control socket %s",
				 pool->cfg.control_path);
		goto out;
	}
	if ((err = fpool__notify_watchdog_start(pool->base)) != 0)
		goto out;
	fpool__pool_spawn_base(pool);
	pool->state = POOL_RUNNING;
	if (fpool__upgrade_adopting(pool)) {
		/* Its workers, then a rolling reload (upgrade.c). */
		fpool__upgrade_adopt_workers(pool);
	} else {
		fpool_log(FPOOL_LOG_INFO,
			  "master pid %d starting %u workers (%s)",
			  (int)pool->master_pid, fpool_pool_size(pool),
			  pool->module		   ? pool->module
			  : pool->cfg.exec_program ? pool->cfg.exec_program
			  : pool->cfg.worker->name ? pool->cfg.worker->name
						   : "worker");
		if (pool->cfg.exec_program != NULL &&
		    pool->cfg.max_requests > 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "--max-requests does not apply to -k exec: "
				  "a program does not report its requests");
		fpool__pool_start_slots(pool);
	}
	/* The command that started a daemon returns now, with success. */
	fpool__daemon_ready(&ready_fd, 0);
	if (pool->cfg.daemonize)
		fpool__log_refresh(); /* stderr is /dev/null now */

	if (event_base_dispatch(pool->base) < 0) {
		fpool_log(FPOOL_LOG_ERROR, "the master's event loop failed");
		err = -EIO;
	}
	/* Reap whatever is left, e.g. when the loop failed. */
	fpool__pool_reap(pool);
	if (run_hooks(pool, &pool->on_shutdown, "on_shutdown") != 0 && err == 0)
		err = -ECANCELED;
	if (err == 0)
		err = pool->result;
	fpool_log(FPOOL_LOG_INFO, "shutdown complete");
out:
	fpool__notify_watchdog_stop();
	/* A daemon that failed to start says so to the waiting command. */
	fpool__daemon_ready(&ready_fd, 1);
	if (pool->pidfile_fd >= 0) {
		fpool__pidfile_remove(pool->cfg.pidfile, pool->pidfile_fd);
		pool->pidfile_fd = -1;
	}
	pool->state = POOL_DONE;
	pool_events_del(pool);
	/* The loop is over: write what the sinks hold, each wait bounded. */
	fpool__sink_on_pressure(NULL, NULL);
	pool->reading_paused = false;
	for (int i = 0; i < 2; i++)
		fpool__sink_detach(pool->out[i]);
	fpool__log_detach();
	return err;
}

/*
 * Free the pool's memory and events.  The master (`owner`) also closes the
 * listeners and removes unix socket files; a new worker keeps its copies of
 * the listeners open and must remove nothing.
 */
static void pool_release(struct fpool_pool *pool, bool owner)
{
	fpool__control_close(pool, owner);
	pool_events_del(pool);
	for (unsigned i = 0; i < pool->nslots; i++)
		fpool__slot_free(pool->slots[i]);
	free(pool->slots);
	for (size_t i = 0; owner && i < pool->nlisteners; i++)
		listener_close(&pool->listeners[i]);
	for (size_t i = 0; i < pool->nlisteners; i++)
		free(pool->listeners[i].unlink_path);
	free(pool->listeners);
	free(pool->preserved);
	free(pool->failures);
	free(pool->account.groups);
	free(pool->module);
	for (int i = 0; i < 2; i++) {
		if (owner)
			fpool__sink_detach(pool->out[i]);
		fpool__sink_free(pool->out[i]);
	}
	fpool__hooks_free(&pool->on_start);
	fpool__hooks_free(&pool->on_shutdown);
	if (pool->shm != NULL && munmap(pool->shm, pool->shm_len) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of the workers' activity area");
	if (pool->shm_fd >= 0)
		close(pool->shm_fd);
	fpool__upgrade_free(pool->upgrade);
	if (pool->base != NULL)
		event_base_free(pool->base);
	free(pool);
}

void fpool_pool_free(struct fpool_pool *pool)
{
	if (pool != NULL)
		pool_release(pool, true);
}
