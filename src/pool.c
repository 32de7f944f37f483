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

typedef void (*pool_signal_fn)(struct fpool_pool *pool, int signo);

static void on_stop_signal(struct fpool_pool *pool, int signo);
static void on_sigchld(struct fpool_pool *pool, int signo);
static void on_ttin(struct fpool_pool *pool, int signo);
static void on_ttou(struct fpool_pool *pool, int signo);
static void on_hup(struct fpool_pool *pool, int signo);
static void reload_step(struct fpool_pool *pool);
static void on_usr1(struct fpool_pool *pool, int signo);
static void on_unused(struct fpool_pool *pool, int signo);

/*
 * The master's signal table (nginx's habit): what each signal does, the
 * one list of it.  A signal with a function is a libevent signal event on
 * the master's loop; one without is ignored (SIG_IGN), because its
 * default action would end or stop the master, and with it the pool:
 * a stray ALRM or USR2, a timer signal, SIGXFSZ once a log reaches
 * RLIMIT_FSIZE (the write then fails with EFBIG, which the log reports),
 * Ctrl-Z (TSTP).  The real-time signals are ignored too (pool_signals).
 * Every worker resets all of them to their defaults (fpool__signals_default).
 */
static const struct {
	int signo;
	pool_signal_fn fn; /* NULL: ignored */
} signal_table[] = {
	{ SIGTERM, on_stop_signal }, /* graceful stop */
	{ SIGQUIT, on_stop_signal }, /* graceful stop, as nginx does */
	{ SIGINT, on_stop_signal },  /* interrupt */
	{ SIGCHLD, on_sigchld },     /* reap and respawn */
	{ SIGTTIN, on_ttin },	     /* one worker more */
	{ SIGTTOU, on_ttou },	     /* one worker fewer */
	{ SIGHUP, on_hup },	     /* rolling reload */
	{ SIGUSR1, on_usr1 },	     /* reopen log files (logrotate) */
	{ SIGUSR2, on_unused },	     /* logged: the binary upgrade is to come */
	{ SIGPIPE, NULL }, /* a write to a peer that left fails with EPIPE */
	{ SIGTSTP, NULL }, /* Ctrl-Z must not stop the pool's supervisor */
	{ SIGALRM, NULL },	     { SIGIO, NULL },	  { SIGPWR, NULL },
	{ SIGVTALRM, NULL },	     { SIGPROF, NULL },	  { SIGXCPU, NULL },
	{ SIGXFSZ, NULL },	     { SIGSTKFLT, NULL }, { SIGSYS, NULL },
};

static int pool_grow(struct fpool_pool *pool, unsigned n)
{
	struct fpool__slot **v;

	if (n <= pool->nslots)
		return 0;
	v = realloc(pool->slots, n * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	memset(v + pool->nslots, 0, (n - pool->nslots) * sizeof(*v));
	pool->slots = v;
	pool->nslots = n;
	return 0;
}

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

/*
 * --user and --group: names (or numbers) to ids, once, in the master, so
 * a worker only has to switch.  The supplementary groups are the user's
 * own (getgrouplist(3), as initgroups(3) would set them) or, for a uid
 * without a passwd entry or a --group alone, just the one group: never
 * the master's (root's disk, shadow...).  A uid without an entry and no
 * --group is refused: it has no group to run with.  0 or -EINVAL.
 */
static int pool_resolve_ids(struct fpool_pool *pool)
{
	const char *user = pool->cfg.user, *group = pool->cfg.group;
	const struct passwd *pw = NULL;
	char *end;

	if (user != NULL) {
		unsigned long v = strtoul(user, &end, 10);

		pw = getpwnam(user);
		if (pw == NULL && *user != '\0' && *end == '\0')
			pw = getpwuid((uid_t)v);
		if (pw != NULL) {
			pool->uid = pw->pw_uid;
			pool->gid = pw->pw_gid;
		} else if (*user != '\0' && *end == '\0' && group != NULL) {
			pool->uid = (uid_t)v;
		} else if (*user != '\0' && *end == '\0') {
			fpool_log(FPOOL_LOG_ERROR,
				  "user %s has no passwd entry to take a group "
				  "from; name a group too",
				  user);
			return -EINVAL;
		} else {
			fpool_log(FPOOL_LOG_ERROR, "no such user: %s", user);
			return -EINVAL;
		}
	}
	if (group != NULL) {
		struct group *gr = getgrnam(group);
		unsigned long v = strtoul(group, &end, 10);

		if (gr != NULL) {
			pool->gid = gr->gr_gid;
		} else if (*group != '\0' && *end == '\0') {
			pool->gid = (gid_t)v;
		} else {
			fpool_log(FPOOL_LOG_ERROR, "no such group: %s", group);
			return -EINVAL;
		}
	}
	if (pool->gid == (gid_t)-1)
		return 0;
	if (pw != NULL && group == NULL) {
		int n = 0;

		/* The first call says how many there are. */
		getgrouplist(pw->pw_name, pool->gid, NULL, &n);
		pool->groups =
			calloc((size_t)(n > 0 ? n : 1), sizeof(*pool->groups));
		if (pool->groups == NULL)
			return -ENOMEM;
		if (n > 0 && getgrouplist(pw->pw_name, pool->gid, pool->groups,
					  &n) >= 0) {
			pool->ngroups = (size_t)n;
			return 0;
		}
		/* Could not list them: the primary group alone. */
	} else {
		pool->groups = calloc(1, sizeof(*pool->groups));
		if (pool->groups == NULL)
			return -ENOMEM;
	}
	pool->groups[0] = pool->gid;
	pool->ngroups = 1;
	return 0;
}

/*
 * What the workers are doing (fpool_worker_set_activity()): one shared
 * anonymous mapping with an entry for every possible slot id, where a
 * page per slot cost 1 MiB of the master's RSS with 256 workers.  Pages
 * become resident only when a slot's entry is first touched, so 256
 * workers cost 8 pages.  Each worker unmaps all but the page holding its
 * own entry (fpool__pool_keep_shared); the 31 neighbours it can still
 * write are only diagnostics, cleaned when read.  Without the mapping the
 * pool runs, and the logs just cannot say what a hung worker was doing.
 */
static void pool_map_shared(struct fpool_pool *pool)
{
	size_t page = fpool__page_size();
	size_t len = FPOOL_MAX_WORKERS * sizeof(struct fpool__shared);
	void *p;

	len = (len + page - 1) / page * page;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "mmap of the workers' activity area; hung "
				 "workers' activity will not be logged");
		return;
	}
	pool->shm = p;
	pool->shm_len = len;
}

void *fpool__pool_keep_shared(struct fpool_pool *pool, unsigned id)
{
	size_t page = fpool__page_size();
	char *base = (char *)pool->shm, *end, *keep;

	if (base == NULL)
		return NULL;
	end = base + pool->shm_len;
	keep = base + id * sizeof(struct fpool__shared) / page * page;
	if (keep > base && munmap(base, (size_t)(keep - base)) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of other workers' activity");
	if (keep + page < end &&
	    munmap(keep + page, (size_t)(end - keep - page)) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of other workers' activity");
	pool->shm = NULL;
	pool->shm_len = 0;
	return keep;
}

int fpool_pool_new(struct fpool_pool **out, const struct fpool_config *cfg)
{
	struct fpool_pool *pool;
	int err = -ENOMEM;

	*out = NULL;
	if (cfg->workers < 1 || cfg->workers > FPOOL_MAX_WORKERS ||
	    cfg->worker == NULL || cfg->worker->main == NULL ||
	    !(cfg->worker_timeout > 0) || !(cfg->graceful_timeout > 0) ||
	    !(cfg->check_interval > 0) || !(cfg->min_uptime >= 0))
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (pool == NULL)
		return -ENOMEM;
	pool->cfg = *cfg;
	pool->state = POOL_NEW;
	pool->reload_slot = -1;
	pool->master_pid = getpid();
	pool->uid = (uid_t)-1;
	pool->pidfile_fd = -1;
	pool->gid = (gid_t)-1;
	/* Recycling jitter and the like: a different draw per master. */
	srandom((unsigned)getpid() ^ (unsigned)time(NULL));
	pool->base = event_base_new();
	if (pool->base == NULL)
		goto err;
	pool_map_shared(pool);
	if ((err = pool_resolve_ids(pool)) != 0)
		goto err;
	if (cfg->max_restarts > 0) {
		pool->failures = calloc((size_t)cfg->max_restarts + 1,
					sizeof(*pool->failures));
		if (pool->failures == NULL) {
			err = -ENOMEM;
			goto err;
		}
	}
	if ((err = pool_grow(pool, cfg->workers)) != 0)
		goto err;
	if ((err = pool_open_output(pool)) != 0)
		goto err;
	for (unsigned i = 0; i < cfg->workers; i++) {
		pool->slots[i] = fpool__slot_new(pool, i);
		if (pool->slots[i] == NULL) {
			err = -ENOMEM;
			goto err;
		}
		pool->slots[i]->wanted = true;
	}
	*out = pool;
	return 0;
err:
	fpool_pool_free(pool);
	return err;
}

/* Add a bound socket to the listeners. */
static int pool_add_listener(struct fpool_pool *pool, int fd,
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
	if ((err = pool_add_listener(pool, fd, &a, false)) != 0)
		return err;
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
	if ((err = pool_add_listener(pool, fd, &a, true)) != 0) {
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

unsigned fpool_pool_size(const struct fpool_pool *pool)
{
	unsigned n = 0;

	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL && pool->slots[i]->wanted)
			n++;
	return n;
}

unsigned fpool__pool_live(const struct fpool_pool *pool)
{
	unsigned n = 0;

	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			n += fpool__slot_live(pool->slots[i]);
	return n;
}

void fpool__pool_worker_ready(struct fpool_pool *pool)
{
	/* systemd's READY=1 once the first full pool serves; after that,
	 * the status line only. */
	if (pool->state != POOL_RUNNING)
		return; /* READY=1 must not follow STOPPING=1 */
	if (!pool->notified_ready) {
		for (unsigned i = 0; i < pool->nslots; i++) {
			struct fpool__slot *s = pool->slots[i];

			if (s != NULL && s->wanted &&
			    (s->cur == NULL || s->cur->state != PROC_READY))
				return;
		}
		pool->notified_ready = true;
		fpool__notify_ready(pool);
		return;
	}
	fpool__notify_status(pool);
}

void fpool__pool_slot_idle(struct fpool_pool *pool)
{
	if (pool->state == POOL_STOPPING && fpool__pool_live(pool) == 0)
		event_base_loopexit(pool->base, NULL);
	/* A slot whose old worker finished draining may be next. */
	if (pool->reloading)
		reload_step(pool);
}

/*
 * Rolling reload, one slot at a time: start the replacement, and when it
 * is ready it takes over and the old worker drains (slot.c).  A slot is
 * only replaced while it has no other extra process, so there is at most
 * one extra worker per slot at any time.  A replacement that dies or
 * hangs before "ready" (--worker-timeout) aborts the reload; the old
 * worker stays.
 */
static void reload_step(struct fpool_pool *pool)
{
	while (pool->reloading && pool->reload_slot < 0) {
		unsigned id = pool->reload_next;
		struct fpool__slot *s;

		if (id >= pool->nslots) {
			pool->reloading = false;
			fpool_log(FPOOL_LOG_INFO, "reload complete");
			fpool__notify_reloaded();
			return;
		}
		s = pool->slots[id];
		if (s == NULL || !s->wanted || s->cur == NULL ||
		    s->cur->state != PROC_READY) {
			pool->reload_next++; /* nothing to replace here */
			continue;
		}
		if (s->old != NULL || s->next != NULL)
			return; /* wait until the extra process is gone */
		pool->reload_next++;
		if (fpool__slot_replace(s) != 0) {
			pool->reloading = false;
			fpool_log(FPOOL_LOG_ERROR,
				  "reload aborted: cannot start a replacement "
				  "for worker %u",
				  id);
			fpool__notify_reloaded();
			return;
		}
		pool->reload_slot = (int)id;
		fpool_log(FPOOL_LOG_INFO,
			  "reload: worker %u pid %d is replaced by pid %d", id,
			  (int)s->cur->pid, (int)s->next->pid);
	}
}

void fpool__pool_replaced(struct fpool_pool *pool, struct fpool__slot *s)
{
	if (s->old != NULL)
		fpool_log(FPOOL_LOG_INFO,
			  "%s: worker %u pid %d took over; pid %d drains",
			  pool->reloading ? "reload" : "recycle", s->id,
			  (int)s->cur->pid, (int)s->old->pid);
	if (pool->reload_slot == (int)s->id)
		pool->reload_slot = -1;
	reload_step(pool);
}

void fpool__pool_replace_failed(struct fpool_pool *pool, struct fpool__slot *s)
{
	if (pool->reload_slot != (int)s->id)
		return;
	pool->reload_slot = -1;
	if (!pool->reloading) {
		/* A recycle: try this worker again later, not at once. */
		fpool_log(FPOOL_LOG_ERROR,
			  "recycling worker %u failed: its replacement did not "
			  "become ready; the old worker stays for now",
			  s->id);
		if (s->cur != NULL)
			s->cur->recycle_after = fpool__now() + 10;
		return;
	}
	pool->reloading = false;
	fpool_log(FPOOL_LOG_ERROR,
		  "reload aborted: the replacement for worker %u did not "
		  "become ready; the old worker stays",
		  s->id);
	fpool__notify_reloaded();
}

void fpool__pool_recycle(struct fpool_pool *pool)
{
	double now = fpool__now();
	char why[128];

	/* One slot at a time, and never across a reload. */
	if (pool->state != POOL_RUNNING || pool->reloading ||
	    pool->reload_slot >= 0)
		return;
	for (unsigned i = 0; i < pool->nslots; i++) {
		struct fpool__slot *s = pool->slots[i];
		const char *reason;

		if (s == NULL || !s->wanted || s->cur == NULL ||
		    s->next != NULL || s->old != NULL)
			continue;
		reason = fpool__proc_recycle_reason(s->cur, now, why,
						    sizeof(why));
		if (reason == NULL)
			continue;
		fpool_log(FPOOL_LOG_INFO, "recycling worker %u pid %d: it %s",
			  s->id, (int)s->cur->pid, reason);
		if (fpool__slot_replace(s) != 0) {
			s->cur->recycle_after = now + 10;
			continue;
		}
		pool->reload_slot = (int)s->id;
		return;
	}
}

void fpool__pool_failed_start(struct fpool_pool *pool)
{
	double now = fpool__now(), window = pool->cfg.restart_window;
	unsigned n = 0, cap = pool->cfg.max_restarts + 1;

	if (pool->cfg.max_restarts == 0 || pool->failures == NULL)
		return;
	pool->failures[pool->failures_at] = now;
	pool->failures_at = (pool->failures_at + 1) % cap;
	if (pool->nfailures < cap)
		pool->nfailures++;
	for (unsigned i = 0; i < pool->nfailures; i++)
		if (now - pool->failures[i] <= window)
			n++;
	if (n <= pool->cfg.max_restarts)
		return;
	fpool_log(FPOOL_LOG_ERROR,
		  "giving up: %u failed starts within %.3g s (--max-restarts "
		  "%u --restart-window %.3g s); stopping the pool",
		  n, window, pool->cfg.max_restarts, window);
	pool->result = -ECHILD;
	fpool_pool_stop(pool, true);
}

int fpool_pool_reload(struct fpool_pool *pool)
{
	if (pool->state != POOL_RUNNING)
		return -ESHUTDOWN;
	/* A reload asked during a reload starts the sweep over, so every
	 * worker is replaced after the last request. */
	fpool_log(FPOOL_LOG_INFO, "reload: %s, %u workers",
		  pool->reloading ? "starting over" : "rolling",
		  fpool_pool_size(pool));
	if (!pool->reloading)
		fpool__notify_reloading();
	pool->reloading = true;
	pool->reload_next = 0;
	reload_step(pool);
	return 0;
}

void fpool__pool_reap(struct fpool_pool *pool)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		struct fpool__slot *s = NULL;
		struct fpool__proc *p = NULL;

		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0 && errno != ECHILD)
			fpool__log_errno(FPOOL_LOG_ERROR, errno, "waitpid");
		if (pid <= 0)
			return;
		for (unsigned i = 0; i < pool->nslots && p == NULL; i++)
			if ((s = pool->slots[i]) != NULL)
				p = fpool__slot_find(s, pid);
		if (p != NULL) {
			fpool__slot_exited(s, p, status);
			/* The slot is up to date now (respawned, in backoff
			 * or idle): tell systemd. */
			if (pool->state == POOL_RUNNING)
				fpool__notify_status(pool);
		} else {
			/* Not a worker: a child of a master hook, or an
			 * orphan re-parented to us as PID 1.  Reaping it is
			 * all there is to do. */
			char how[96];

			fpool__describe_status(status, how, sizeof(how));
			fpool_log(FPOOL_LOG_DEBUG, "reaped pid %d (%s)",
				  (int)pid, how);
		}
	}
}

int fpool_pool_add_worker(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot *s;
	unsigned long need;
	int err;

	if (id >= FPOOL_MAX_WORKERS)
		return -EINVAL;
	if ((err = pool_grow(pool, id + 1)) != 0)
		return err;
	s = pool->slots[id];
	if (s != NULL && s->wanted)
		return -EEXIST;
	if (!fpool__pool_fds_fit(pool, fpool_pool_size(pool) + 1, &need))
		return -EMFILE;
	if (s == NULL) {
		s = pool->slots[id] = fpool__slot_new(pool, id);
		if (s == NULL)
			return -ENOMEM;
	}
	s->wanted = true;
	s->failed = 0;
	/* A slot still stopping is respawned when its old process exits. */
	if (pool->state == POOL_RUNNING && s->cur == NULL && !s->backoff)
		fpool__slot_spawn(s);
	return 0;
}

int fpool_pool_remove_worker(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot *s;

	if (id >= pool->nslots || pool->slots[id] == NULL ||
	    !pool->slots[id]->wanted)
		return -ENOENT;
	if (fpool_pool_size(pool) <= 1)
		return -EBUSY;
	s = pool->slots[id];
	s->wanted = false;
	if (pool->state == POOL_RUNNING)
		fpool__slot_stop(s, true);
	return 0;
}

/*
 * No worker will be started again: stop taking new connections, so that
 * none is queued where no one will accept it.  A queued connection is
 * reset when the last copy of its listener closes, and the workers close
 * theirs one after the other: the clients of the first to stop are told
 * "Connection: close", reconnect, and would be queued on the socket a
 * worker that has not stopped yet is about to close (a bench run saw 17 of
 * 32 such reconnects reset).  So a TCP socket the master made first stops
 * taking connections for all the processes at once, while the workers
 * accept what is already queued; then the master closes its copy, and
 * once the workers close theirs, clients are refused.  A socket passed in
 * (systemd's) is not ours to change: it must queue connections for the
 * next instance of the service.
 */
static void pool_stop_listening(struct fpool_pool *pool)
{
	for (size_t i = 0; i < pool->nlisteners; i++) {
		struct fpool__listener *l = &pool->listeners[i];
		int err;

		if (l->fd < 0)
			continue;
		if (l->tcp_owned && (err = fpool__listen_refuse_new(l->fd)) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, -err,
					 "listener %s: cannot stop new "
					 "connections before the workers stop",
					 l->addr.text);
		if (close(l->fd) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "closing listener %s", l->addr.text);
		l->fd = -1;
	}
}

void fpool_pool_stop(struct fpool_pool *pool, int graceful)
{
	if (pool->state == POOL_STOPPING && graceful)
		return;
	if (pool->state == POOL_RUNNING) {
		pool->state = POOL_STOPPING;
		pool->reloading = false;
		fpool__notify_stopping();
		pool_stop_listening(pool);
		pool->graceful = graceful;
		fpool_log(FPOOL_LOG_INFO, "shutting down (%s): %u workers",
			  graceful ? "graceful" : "interrupt",
			  fpool__pool_live(pool));
	} else if (pool->state == POOL_STOPPING) {
		fpool_log(FPOOL_LOG_INFO,
			  "interrupt during graceful shutdown: interrupting "
			  "%u workers",
			  fpool__pool_live(pool));
	} else {
		return;
	}
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			fpool__slot_stop(pool->slots[i], graceful);
	fpool__pool_slot_idle(pool);
}

static void on_stop_signal(struct fpool_pool *pool, int signo)
{
	fpool_log(FPOOL_LOG_INFO, "got %s", fpool__signame(signo));
	fpool_pool_stop(pool, signo != SIGINT);
}

static void on_sigchld(struct fpool_pool *pool, int signo)
{
	(void)signo;
	fpool__pool_reap(pool);
}

static void on_ttin(struct fpool_pool *pool, int signo)
{
	unsigned id = 0;
	int err;

	(void)signo;
	if (pool->state != POOL_RUNNING)
		return;
	while (id < pool->nslots && pool->slots[id] != NULL &&
	       pool->slots[id]->wanted)
		id++;
	err = fpool_pool_add_worker(pool, id);
	if (err == -EMFILE)
		fpool_log(FPOOL_LOG_WARNING,
			  "SIGTTIN: cannot add worker %u: the pool would not "
			  "fit the open file limit (%llu)",
			  id, (unsigned long long)pool->nofile);
	else if (err != 0)
		fpool_log(FPOOL_LOG_WARNING,
			  "SIGTTIN: cannot add worker %u: %s", id,
			  fpool_strerror(err));
	else
		fpool_log(FPOOL_LOG_INFO, "SIGTTIN: added worker %u (%u now)",
			  id, fpool_pool_size(pool));
}

static void on_ttou(struct fpool_pool *pool, int signo)
{
	int err;

	(void)signo;
	if (pool->state != POOL_RUNNING)
		return;
	for (unsigned id = pool->nslots; id-- > 0;) {
		if (pool->slots[id] == NULL || !pool->slots[id]->wanted)
			continue;
		err = fpool_pool_remove_worker(pool, id);
		if (err != 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "SIGTTOU: not removing worker %u: %s", id,
				  err == -EBUSY ? "it is the last one"
						: fpool_strerror(err));
		else
			fpool_log(FPOOL_LOG_INFO,
				  "SIGTTOU: removing worker %u (%u left)", id,
				  fpool_pool_size(pool));
		return;
	}
}

static void on_hup(struct fpool_pool *pool, int signo)
{
	fpool_log(FPOOL_LOG_INFO, "got %s", fpool__signame(signo));
	fpool_pool_reload(pool);
}

static void on_usr1(struct fpool_pool *pool, int signo)
{
	int err;

	(void)signo;
	err = fpool_log_reopen();
	if (err != 0)
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "SIGUSR1: cannot reopen the log file; still "
				 "writing to the old one");
	err = pool_open_output(pool);
	fpool_log(err ? FPOOL_LOG_WARNING : FPOOL_LOG_INFO,
		  "SIGUSR1: log files reopened%s",
		  err ? " (not all: see above)" : "");
}

static void on_unused(struct fpool_pool *pool, int signo)
{
	(void)pool;
	fpool_log(FPOOL_LOG_WARNING,
		  "got %s, which this version does not use; "
		  "ignored",
		  fpool__signame(signo));
}

static void pool_signal_cb(evutil_socket_t signo, short what, void *arg)
{
	struct fpool_pool *pool = arg;

	(void)what;
	for (size_t i = 0; i < FPOOL_NELEM(signal_table); i++)
		if (signal_table[i].signo == (int)signo)
			signal_table[i].fn(pool, (int)signo);
}

/*
 * The periodic check.  It runs every check_interval; when it runs much
 * later than that, the master itself did not run in between: stopped
 * (SIGSTOP, Ctrl-Z of a shell that does not know we ignore TSTP, a
 * debugger) or frozen with its workers (the freezer cgroup, `docker
 * pause`).  The workers' silence over that time says nothing about them,
 * so they get that time back before their heartbeats are judged, instead
 * of all being killed as hung after a thaw.
 */
static void pool_check_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_pool *pool = arg;
	double now = fpool__now(), late;

	(void)fd;
	(void)what;
	late = now - pool->check_last - pool->cfg.check_interval;
	pool->check_last = now;
	if (late > FPOOL_CHECK_LATE && late > pool->cfg.check_interval) {
		fpool_log(FPOOL_LOG_WARNING,
			  "the master did not run for %.1f s (stopped or "
			  "frozen?); the workers get that time back before "
			  "their heartbeats are judged",
			  late);
		for (unsigned i = 0; i < pool->nslots; i++)
			if (pool->slots[i] != NULL)
				fpool__slot_credit(pool->slots[i], late, now);
	}
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			fpool__slot_check(pool->slots[i], now);
	fpool__pool_recycle(pool);
}

/*
 * A sink fell behind (sink.c): stop reading the workers' output pipes,
 * and each channel at its first log record (slot.c), until it catches up
 * or is given up on, so that workers that log wait in their own writes
 * (back-pressure) instead of the master queueing without bound.  A
 * "ready" still gets through; heartbeats may wait behind a record, so
 * that time is not held against the workers either.
 */
static void pool_pressure_cb(bool congested, void *arg)
{
	struct fpool_pool *pool = arg;
	double now = fpool__now();

	if (congested == pool->reading_paused)
		return;
	pool->reading_paused = congested;
	if (congested) {
		pool->paused_at = now;
		fpool_log(FPOOL_LOG_DEBUG,
			  "the log is behind: reading the workers paused");
	}
	for (unsigned i = 0; i < pool->nslots; i++) {
		if (pool->slots[i] == NULL)
			continue;
		if (!congested)
			fpool__slot_credit(pool->slots[i],
					   now - pool->paused_at, now);
		fpool__slot_reading(pool->slots[i], !congested);
	}
}

/* Ignore a signal while the pool runs; pool_events_del() puts back
 * what the program had. */
static void pool_ignore(struct fpool_pool *pool, int sig)
{
	struct sigaction ign = { .sa_handler = SIG_IGN };

	sigemptyset(&ign.sa_mask);
	if (pool->nignored >= FPOOL_NELEM(pool->ignored))
		return;
	if (sigaction(sig, &ign, &pool->ignored[pool->nignored].old) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "cannot ignore %s",
				 fpool__signame(sig));
		return;
	}
	pool->ignored[pool->nignored++].sig = sig;
}

static void pool_events_del(struct fpool_pool *pool)
{
	while (pool->nignored > 0) {
		pool->nignored--;
		sigaction(pool->ignored[pool->nignored].sig,
			  &pool->ignored[pool->nignored].old, NULL);
	}
	for (size_t i = 0; i < pool->nsigev; i++)
		event_free(pool->sigev[i]);
	pool->nsigev = 0;
	if (pool->check_ev != NULL) {
		event_free(pool->check_ev);
		pool->check_ev = NULL;
	}
}

static int pool_events_add(struct fpool_pool *pool)
{
	struct timeval tv = fpool__tv(pool->cfg.check_interval);

	for (size_t i = 0; i < FPOOL_NELEM(signal_table); i++) {
		struct event *ev;

		if (signal_table[i].fn == NULL) {
			pool_ignore(pool, signal_table[i].signo);
			continue;
		}
		ev = evsignal_new(pool->base, signal_table[i].signo,
				  pool_signal_cb, pool);
		if (ev == NULL || evsignal_add(ev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR, "cannot handle %s",
				  fpool__signame(signal_table[i].signo));
			if (ev != NULL)
				event_free(ev);
			return -ENOMEM;
		}
		pool->sigev[pool->nsigev++] = ev;
	}
	/* No one's real-time signal may end the pool either. */
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		pool_ignore(pool, sig);
	pool->check_last = fpool__now();
	pool->check_ev =
		event_new(pool->base, -1, EV_PERSIST, pool_check_cb, pool);
	if (pool->check_ev == NULL || event_add(pool->check_ev, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "cannot start the check timer");
		return -ENOMEM;
	}
	return 0;
}

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
static int pool_fd_limit(struct fpool_pool *pool)
{
	struct rlimit rl;
	unsigned long need = pool_fds_needed(pool, fpool_pool_size(pool));

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
			  fpool_pool_size(pool), need,
			  (unsigned long long)rl.rlim_cur,
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

/* Daemonize (-D) and take the pidfile, in DESIGN.md's order: after the
 * listeners are bound, before any signal event and any worker.  0, or
 * -errno, logged. */
static int pool_detach(struct fpool_pool *pool, int *ready_fd)
{
	pid_t holder = 0;
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

int fpool_pool_run(struct fpool_pool *pool)
{
	int err, ready_fd = -1;

	if (pool->state != POOL_NEW)
		return -EALREADY;
	if ((err = pool_detach(pool, &ready_fd)) != 0)
		goto out;
	fpool__log_libevent();
	if ((err = pool_fd_limit(pool)) != 0)
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
	fpool__sink_on_pressure(pool_pressure_cb, pool);
	if (run_hooks(pool, &pool->on_start, "on_start") != 0) {
		err = -ECANCELED;
		goto out;
	}
	pool->started = fpool__now();
	if (pool->cfg.control_path != NULL &&
	    (err = fpool__control_open(pool, pool->cfg.control_path)) != 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot open the control socket %s",
				 pool->cfg.control_path);
		goto out;
	}
	pool->state = POOL_RUNNING;
	fpool_log(FPOOL_LOG_INFO, "master pid %d starting %u workers (%s)",
		  (int)pool->master_pid, fpool_pool_size(pool),
		  pool->cfg.worker->name ? pool->cfg.worker->name : "worker");
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL && pool->slots[i]->wanted)
			fpool__slot_spawn(pool->slots[i]);
	/* The command that started a daemon returns now, with success. */
	fpool__daemon_ready(&ready_fd, 0);
	if (pool->cfg.daemonize)
		fpool__log_refresh(); /* stderr is /dev/null now */
	if ((err = fpool__notify_watchdog_start(pool)) != 0)
		goto out;

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
	fpool__notify_watchdog_stop(pool);
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
	for (size_t i = 0; owner && i < pool->nlisteners; i++) {
		struct fpool__listener *l = &pool->listeners[i];

		if (l->fd >= 0 && close(l->fd) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "closing listener %s", l->addr.text);
		if (l->unlink_path != NULL && unlink(l->unlink_path) < 0 &&
		    errno != ENOENT)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "removing %s", l->unlink_path);
	}
	for (size_t i = 0; i < pool->nlisteners; i++)
		free(pool->listeners[i].unlink_path);
	free(pool->listeners);
	free(pool->preserved);
	free(pool->failures);
	free(pool->groups);
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
	if (pool->base != NULL)
		event_base_free(pool->base);
	free(pool);
}

/*
 * A new worker leaves the master's state alone.  Freeing it (after an
 * event_reinit() of the master's loop, which re-registers every fd the
 * master watches in a new epoll instance) cost each fork time in
 * proportion to the pool: 1024 workers took 9 s to start and 27 s to
 * reload.  What the child must not do is delete an fd event of the
 * master's loop: their epoll instance is the master's own (shared
 * since fork()), and epoll_ctl(DEL) would unregister the master's fd.
 * Signal events are safe to free (libevent's signal delete restores the
 * disposition and touches no epoll instance), and must be, so that the
 * worker's own loop can take the signals.  The rest -- memory, timers,
 * fd events -- is left as it was: the fds themselves are closed with the
 * other inherited ones, the memory is copy-on-write and never touched.
 */
void fpool__pool_abandon(struct fpool_pool *pool)
{
	for (size_t i = 0; i < pool->nsigev; i++)
		event_free(pool->sigev[i]);
	pool->nsigev = 0;
}

void fpool_pool_free(struct fpool_pool *pool)
{
	if (pool != NULL)
		pool_release(pool, true);
}
