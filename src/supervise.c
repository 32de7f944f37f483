/*
 * The supervisor: the pool's policy, and the one place that acts on what
 * the slots' state table (slot.c) decides.
 *
 * Every event about a slot -- a process said "ready", exited or overran,
 * a backoff delay passed, the operator added, removed, killed, reloaded
 * or stopped -- goes through slot_event(): the table decides, execute()
 * carries the decision out with proc.c's system calls, then the pool-wide
 * consequences follow here: the rolling reload's cursor, recycling, the
 * restart intensity that gives up (--max-restarts), systemd's status,
 * and the end of the loop once a stopping pool has no process left.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

static void reload_step(struct fpool_pool *pool);

struct fpool__slot_facts fpool__pool_facts(const struct fpool_pool *pool)
{
	struct fpool__slot_facts f = {
		.now = fpool__now(),
		.min_uptime = pool->cfg.min_uptime,
		.running = pool->state == POOL_RUNNING,
		.graceful = true,
	};

	return f;
}

static void slot_event(struct fpool__slot *s, enum fpool__slot_event ev,
		       struct fpool__proc *p)
{
	struct fpool__slot_facts f = fpool__pool_facts(s->pool);

	fpool__slot_event(s, ev, p, &f);
}

/* ---- carrying out a decision ------------------------------------------- */

static void log_started(struct fpool__slot *s, struct fpool__proc *p)
{
	if (s->restarts > 1)
		fpool_log(FPOOL_LOG_INFO,
			  "worker %u pid %d started (respawn %u)", s->id,
			  (int)p->pid, s->restarts - 1);
	else
		fpool_log(FPOOL_LOG_INFO, "worker %u pid %d started", s->id,
			  (int)p->pid);
	if (s->spawning == ROLE_NEXT && s->cur != NULL)
		fpool_log(FPOOL_LOG_INFO,
			  "%s: worker %u pid %d is replaced "
			  "by pid %d",
			  s->recycling ? "recycle" : "reload", s->id,
			  (int)s->cur->pid, (int)p->pid);
}

static void execute(struct fpool__slot *s, const struct fpool__decision *d)
{
	struct fpool_pool *pool = s->pool;
	unsigned id = s->id;
	pid_t started = 0;

	for (unsigned i = 0; i < d->nsig; i++) {
		int sig = d->sig[i].sig;

		/* -k exec: some programs stop gracefully on another
		 * signal (--exec-stop-signal). */
		if (sig == SIGTERM && pool->cfg.exec_program != NULL &&
		    pool->cfg.exec_stop_signal > 0)
			sig = pool->cfg.exec_stop_signal;
		fpool__proc_signal(d->sig[i].p, sig);
		if (d->sig[i].deadline)
			fpool__proc_arm_deadline(d->sig[i].p);
	}
	if (d->act & FPOOL_ACT_FREE)
		fpool__proc_free(d->gone);
	if (d->act & FPOOL_ACT_UNBACKOFF)
		event_del(s->timer);
	if (d->act & FPOOL_ACT_READY)
		fpool__pool_worker_ready(pool);
	/* Before anything is started again: it may be the one failure too
	 * many, and then the pool stops (and the slot with it). */
	if (d->act & FPOOL_ACT_FAILED_START)
		fpool__pool_failed_start(pool);
	if (d->act & FPOOL_ACT_TOOK_OVER) {
		if (s->old != NULL)
			fpool_log(FPOOL_LOG_INFO,
				  "%s: worker %u pid %d took over; pid %d "
				  "drains",
				  s->recycling ? "recycle" : "reload", s->id,
				  (int)s->cur->pid, (int)s->old->pid);
		if (pool->reload_slot == (int)s->id)
			pool->reload_slot = -1;
		reload_step(pool);
	}
	if (d->act & FPOOL_ACT_REPLACE_FAILED)
		fpool__pool_replace_failed(pool, s);
	if ((d->act & FPOOL_ACT_SPAWN) && pool->state == POOL_RUNNING) {
		struct fpool__proc *p = fpool__proc_spawn(s);

		if (p != NULL)
			p->generation = pool->generation;
		slot_event(s, p != NULL ? SEV_SPAWNED : SEV_SPAWN_FAILED, p);
		if (p != NULL) {
			log_started(s, p);
			started = p->pid;
		}
	}
	if ((d->act & FPOOL_ACT_BACKOFF) && pool->state == POOL_RUNNING) {
		fpool_log(FPOOL_LOG_WARNING,
			  "worker %u: %s; next start in %.3g s", s->id, d->why,
			  d->delay);
		fpool__slot_arm_backoff(s, d->delay);
		fpool__event_backoff(pool, s->id, d->delay, d->why);
	}
	if (d->act & FPOOL_ACT_GONE)
		fpool__pool_slot_idle(pool);
	/* Last: the program's callback may act on the pool, and the
	 * decision is carried out by then. */
	if (started > 0)
		fpool__event_worker(pool, FPOOL_WORKER_STARTED, id, started, 0);
}

/* Dispatch and carry out; what was decided (FPOOL_ACT_*). */
unsigned fpool__slot_event(struct fpool__slot *s, enum fpool__slot_event ev,
			   struct fpool__proc *p,
			   const struct fpool__slot_facts *f)
{
	struct fpool__decision d;

	fpool__slot_dispatch(s, ev, p, f, &d);
	execute(s, &d);
	return d.act;
}

/* ---- what the processes tell ------------------------------------------ */

static void on_exit_status(struct fpool__slot *s, struct fpool__proc *p,
			   int status)
{
	struct fpool_pool *pool = s->pool;
	bool stopping = p->state == PROC_STOPPING;
	pid_t pid = p->pid;
	unsigned id = s->id; /* the slot may be gone after SEV_EXIT */

	fpool__proc_drain(p);
	fpool__describe_status(status, s->last_exit, sizeof(s->last_exit));
	fpool_log(stopping || (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			  ? FPOOL_LOG_INFO
			  : FPOOL_LOG_WARNING,
		  "worker %u pid %d %s after %.3f s%s", s->id, (int)p->pid,
		  s->last_exit, fpool__now() - p->started,
		  p->ready_at == 0 ? ", before ready" : "");
	slot_event(s, SEV_EXIT, p);
	/* The slot is up to date now (respawned, in backoff or idle). */
	if (pool->state == POOL_RUNNING) {
		struct fpool__counts c;

		fpool__pool_counts(pool, &c);
		fpool__notify_status(&c);
	}
	fpool__event_worker(pool, FPOOL_WORKER_EXITED, id, pid, status);
}

void fpool__pool_reap_mode(struct fpool_pool *pool)
{
	int sub = 0;
	const char *why = NULL;

	if (prctl(PR_GET_CHILD_SUBREAPER, &sub) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "prctl(PR_GET_CHILD_SUBREAPER)");
	if (getpid() == 1)
		why = "PID 1";
	else if (sub)
		why = "a child subreaper";
	else if (pool->cfg.reap_all)
		why = "asked to (reap_all)";
	pool->reap_all = why != NULL;
	if (why != NULL)
		fpool_log(FPOOL_LOG_DEBUG,
			  "the master reaps every child, not only its "
			  "workers: it is %s",
			  why);
}

/* What waitpid() said of `pid`: a process of a slot, of the upgrade, or
 * (reaping every child) none of ours. */
static void reaped(struct fpool_pool *pool, pid_t pid, int status)
{
	struct fpool__slot *s = NULL;
	struct fpool__proc *p = NULL;

	for (unsigned i = 0; i < pool->nslots && p == NULL; i++)
		if ((s = pool->slots[i]) != NULL)
			p = fpool__slot_find(s, pid);
	if (p != NULL) {
		on_exit_status(s, p, status);
	} else if (!fpool__upgrade_reaped(pool, pid, status)) {
		/* Not a worker: a child of a master hook, or an orphan
		 * re-parented to us as PID 1 or subreaper.  Reaping it is
		 * all there is to do. */
		char how[96];

		fpool__describe_status(status, how, sizeof(how));
		fpool_log(FPOOL_LOG_DEBUG, "reaped pid %d (%s)", (int)pid, how);
	}
}

/* waitpid(pid, WNOHANG): 1 if it was reaped (and acted on), else 0. */
static int reap_one(struct fpool_pool *pool, pid_t pid)
{
	int status;
	pid_t r;

	while ((r = waitpid(pid, &status, WNOHANG)) < 0 && errno == EINTR)
		;
	if (r < 0 && errno != ECHILD)
		fpool__log_errno(FPOOL_LOG_ERROR, errno, "waitpid(%d)",
				 (int)pid);
	if (r <= 0)
		return 0;
	reaped(pool, r, status);
	return 1;
}

/* Every exited process of the slots.  Acting on an exit changes its
 * slot (the process is freed, a new one may be forked): the slot is
 * looked at again until none of its processes was reaped. */
static void reap_slots(struct fpool_pool *pool, bool sigchld)
{
	for (unsigned i = 0; i < pool->nslots; i++) {
		bool again = true;

		while (again && pool->slots[i] != NULL) {
			struct fpool__slot *s = pool->slots[i];
			struct fpool__proc *v[3] = { s->cur, s->next, s->old };

			again = false;
			/* On SIGCHLD a process with a watched pidfd is left
			 * to it (fpool__pool_reap_proc): no waitpid() per
			 * process of the pool at each exit. */
			for (int j = 0; j < 3 && !again; j++)
				if (v[j] != NULL &&
				    !(sigchld && v[j]->pidfd_ev != NULL) &&
				    reap_one(pool, v[j]->pid))
					again = true;
		}
	}
}

static void reap(struct fpool_pool *pool, bool sigchld)
{
	if (!pool->reap_all) {
		/* Only ours: a child the program started itself (a master
		 * hook's) is the program's to wait for.  Such a zombie
		 * raises no second SIGCHLD, so the loop does not spin. */
		reap_slots(pool, sigchld);
		fpool__upgrade_reap(pool);
		return;
	}
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0 && errno != ECHILD)
			fpool__log_errno(FPOOL_LOG_ERROR, errno, "waitpid");
		if (pid <= 0)
			return;
		reaped(pool, pid, status);
	}
}

void fpool__pool_reap(struct fpool_pool *pool)
{
	reap(pool, false);
}

void fpool__pool_reap_sigchld(struct fpool_pool *pool)
{
	reap(pool, true);
}

void fpool__pool_reap_proc(struct fpool_pool *pool, struct fpool__proc *p)
{
	/* Its pidfd is readable: it exited, and waitpid() of it alone
	 * costs O(1) where a walk of the pool would cost O(pool) per exit
	 * (a scale-down of thousands).  As init, strays are reaped on
	 * their SIGCHLD. */
	(void)reap_one(pool, p->pid);
}

static void proc_event(struct fpool_pool *pool, struct fpool__slot *s,
		       struct fpool__proc *p, enum fpool__proc_event ev)
{
	switch (ev) {
	case PEV_READY: {
		bool first = p->state == PROC_STARTING;
		pid_t pid = p->pid;

		if (first)
			fpool_log(FPOOL_LOG_INFO,
				  "worker %u pid %d ready (%.3f ms after fork)",
				  s->id, (int)p->pid,
				  (fpool__now() - p->started) * 1e3);
		slot_event(s, SEV_READY, p);
		if (first)
			fpool__event_worker(pool, FPOOL_WORKER_READY, s->id,
					    pid, 0);
		break;
	}
	case PEV_HEARTBEAT:
		/* Past its request limit: recycle it now rather than at the
		 * next check, so each worker retires at its own count. */
		if (p->max_requests > 0 && p->requests >= p->max_requests)
			fpool__pool_recycle(pool);
		break;
	case PEV_EXITED:
		fpool__pool_reap_proc(pool, p);
		break;
	case PEV_DEADLINE:
		if (p->state != PROC_STOPPING || p->killed)
			break;
		fpool_log(FPOOL_LOG_WARNING,
			  "worker %u pid %d did not stop within %.3g s, "
			  "sending SIGKILL",
			  s->id, (int)p->pid, pool->cfg.graceful_timeout);
		slot_event(s, SEV_OVERRUN, p);
		break;
	case PEV_DUE:
		slot_event(s, SEV_DUE, NULL);
		break;
	}
}

void fpool__supervise_init(struct fpool_pool *pool)
{
	pool->proc_event = proc_event;
}

/* ---- the pool's counts and systemd's view -------------------------------- */

void fpool__pool_counts(const struct fpool_pool *pool, struct fpool__counts *c)
{
	memset(c, 0, sizeof(*c));
	for (unsigned i = 0; i < pool->nslots; i++) {
		const struct fpool__slot *s = pool->slots[i];

		if (s == NULL || !s->wanted)
			continue;
		c->target++;
		if (s->cur != NULL && s->cur->state == PROC_READY)
			c->ready++;
		else if (s->cur != NULL && s->cur->state == PROC_STARTING)
			c->starting++;
		else if (s->state == SLOT_BACKOFF)
			c->backoff++;
	}
	c->reloading = pool->reloading;
	c->stopping = pool->state == POOL_STOPPING;
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
	struct fpool__counts c;

	/* READY=1 must not follow STOPPING=1. */
	if (pool->state != POOL_RUNNING)
		return;
	fpool__pool_counts(pool, &c);
	/* systemd's READY=1 once the first full pool serves; after that,
	 * the status line only. */
	if (c.ready >= c.target)
		fpool__upgrade_pool_ready(pool);
	if (!pool->notified_ready) {
		if (c.ready < c.target)
			return;
		pool->notified_ready = true;
		fpool__notify_ready(&c);
		return;
	}
	fpool__notify_status(&c);
}

void fpool__pool_slot_idle(struct fpool_pool *pool)
{
	if (pool->state == POOL_STOPPING && fpool__pool_live(pool) == 0)
		event_base_loopexit(pool->base, NULL);
	/* A slot whose old worker finished draining may be next. */
	if (pool->reloading)
		reload_step(pool);
}

/* ---- rolling reload and recycling ---------------------------------------- */

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
		struct fpool__slot_facts f;

		if (id >= pool->nslots) {
			pool->reloading = false;
			fpool_log(FPOOL_LOG_INFO, "reload complete");
			fpool__event_phase(pool, "reload", "end", NULL);
			fpool__notify_reloaded();
			fpool__upgrade_reload_done(pool, true);
			return;
		}
		s = pool->slots[id];
		/* A worker forked since the reload was asked (a slot the
		 * new config added) already runs what it asked for. */
		if (s == NULL || !s->wanted || s->cur == NULL ||
		    s->cur->state != PROC_READY ||
		    s->cur->started >= pool->reload_asked) {
			pool->reload_next++; /* nothing to replace here */
			continue;
		}
		if (s->state != SLOT_READY)
			return; /* wait until the extra process is gone */
		pool->reload_next++;
		pool->reload_slot = (int)id;
		f = fpool__pool_facts(pool);
		/* A failed fork ends the reload (replace_failed); a refusal
		 * leaves the slot as it is. */
		if (!(fpool__slot_event(s, SEV_REPLACE, NULL, &f) &
		      FPOOL_ACT_SPAWN) &&
		    pool->reload_slot == (int)id)
			pool->reload_slot = -1;
	}
}

void fpool__pool_replace_failed(struct fpool_pool *pool, struct fpool__slot *s)
{
	if (pool->reload_slot != (int)s->id)
		return;
	pool->reload_slot = -1;
	if (s->recycling) {
		/* A recycle: this worker is tried again later (slot.c). */
		fpool_log(FPOOL_LOG_ERROR,
			  "recycling worker %u failed: its replacement did not "
			  "become ready; the old worker stays for now",
			  s->id);
		return;
	}
	if (!pool->reloading)
		return;
	pool->reloading = false;
	fpool_log(FPOOL_LOG_ERROR,
		  "reload aborted: the replacement for worker %u did not "
		  "become ready; the old worker stays",
		  s->id);
	fpool__notify_reloaded();
	fpool__upgrade_reload_done(pool, false);
}

int fpool__pool_module_generation(struct fpool_pool *pool, const char *module)
{
	char *path;
	int err;

	pool->refused[0] = '\0';
	err = fpool__module_resolve(module, &path, pool->refused,
				    sizeof(pool->refused));
	if (err == 0)
		err = fpool__module_check(path, &pool->account, pool->cfg.user,
					  FPOOL_MODULE_CHECK_TIMEOUT,
					  pool->refused, sizeof(pool->refused));
	if (err != 0) {
		free(path);
		return err;
	}
	free(pool->module);
	pool->module = path;
	pool->spawn.module = path;
	return 0;
}

int fpool_pool_reload(struct fpool_pool *pool)
{
	double asked = fpool__now();
	int err;

	if (pool->state != POOL_RUNNING)
		return -ESHUTDOWN;
	/* During a binary upgrade's check it waits (upgrade.c). */
	if (fpool__upgrade_defer_reload(pool))
		return 0;
	/* A new config (the program's hook), and the module as it is on
	 * disk now, are checked before any worker is replaced: one that
	 * cannot be used leaves the workers as they are. */
	if (pool->reconfigure != NULL)
		err = pool->reconfigure(pool, pool->reconfigure_arg);
	else if (pool->cfg.worker_module != NULL)
		err = fpool__pool_module_generation(pool,
						    pool->cfg.worker_module);
	else
		err = 0;
	if (err != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "reload refused: %s; nothing changed, the workers "
			  "serve on",
			  pool->refused[0] ? pool->refused
					   : fpool_strerror(err));
		return err;
	}
	/* A reload asked during a reload starts the sweep over, so every
	 * worker is replaced after the last request. */
	fpool_log(FPOOL_LOG_INFO, "reload: %s, %u workers",
		  pool->reloading ? "starting over" : "rolling",
		  fpool_pool_size(pool));
	if (!pool->reloading)
		fpool__notify_reloading();
	pool->generation++;
	fpool__event_phase(pool, "reload", "begin",
			   pool->reloading ? "starting over" : "rolling");
	pool->reloading = true;
	pool->reload_next = 0;
	pool->reload_asked = asked;
	reload_step(pool);
	return 0;
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
		struct fpool__slot_facts f;
		const char *reason;

		if (s == NULL || !s->wanted || s->state != SLOT_READY)
			continue;
		reason = fpool__proc_recycle_reason(s->cur, now, why,
						    sizeof(why));
		if (reason == NULL)
			continue;
		fpool_log(FPOOL_LOG_INFO, "recycling worker %u pid %d: it %s",
			  s->id, (int)s->cur->pid, reason);
		pool->reload_slot = (int)s->id;
		f = fpool__pool_facts(pool);
		f.recycle = true;
		if (!(fpool__slot_event(s, SEV_REPLACE, NULL, &f) &
		      FPOOL_ACT_SPAWN) &&
		    pool->reload_slot == (int)s->id)
			pool->reload_slot = -1;
		if (pool->reload_slot >= 0)
			return; /* under way; else try the next slot */
	}
}

/* ---- restart intensity: giving up ---------------------------------------- */

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

void fpool_pool_stop(struct fpool_pool *pool, int graceful)
{
	struct fpool__slot_facts f;

	if (pool->state == POOL_STOPPING && graceful)
		return;
	if (pool->state == POOL_RUNNING) {
		pool->state = POOL_STOPPING;
		pool->reloading = false;
		fpool__notify_stopping();
		/* No worker will be started again: take no new connection
		 * (listen.c says why). */
		fpool__listeners_stop(pool->listeners, pool->nlisteners);
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
	f = fpool__pool_facts(pool);
	f.graceful = graceful;
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			fpool__slot_event(pool->slots[i], SEV_STOP, NULL, &f);
	fpool__pool_slot_idle(pool);
}

/* ---- the periodic check -------------------------------------------------- */

static void check_proc(struct fpool__slot *s, struct fpool__proc *p, double now)
{
	const struct fpool_config *cfg = &s->pool->cfg;
	char activity[sizeof(s->shm->activity)];
	double age;

	if (p->killed)
		return;
	if (p->state == PROC_STOPPING) {
		/* Normally the process's own timer fires first; this is the
		 * safety net should arming it have failed. */
		if (now - p->stop_sent > cfg->graceful_timeout + 1)
			proc_event(s->pool, s, p, PEV_DEADLINE);
		return;
	}
	/* While the master does not read the channels (a sink is behind),
	 * the heartbeats wait there: nothing to judge. */
	if (s->pool->reading_paused)
		return;
	/* -k exec: a program not ready after --worker-timeout (notify: it
	 * never said READY=1, a watchdog ping does not make it ready;
	 * exec: its execve() was never seen to succeed, which only an
	 * upgrade between its fork and its exec can cause) fails to
	 * start.  Once ready, --exec-type exec is alive while it exists. */
	if (cfg->exec_program != NULL && p->state == PROC_STARTING &&
	    now - p->started > cfg->worker_timeout) {
		fpool_log(FPOOL_LOG_WARNING,
			  "worker %u pid %d %s within --worker-timeout %.3g s, "
			  "sending SIGKILL",
			  s->id, (int)p->pid,
			  cfg->exec_notify ? "did not send READY=1"
					   : "was not seen to exec",
			  cfg->worker_timeout);
		slot_event(s, SEV_OVERRUN, p);
		return;
	}
	if (cfg->exec_program != NULL && !cfg->exec_notify)
		return;
	/* Judge what the worker sent, not what we have not read yet. */
	if (now - p->last_seen > cfg->worker_timeout)
		fpool__proc_poll(p);
	age = now - p->last_seen;
	if (age <= cfg->worker_timeout || p->killed)
		return;
	fpool__slot_activity(s, activity, sizeof(activity));
	fpool_log(FPOOL_LOG_WARNING,
		  "worker %u pid %d hung: no heartbeat for %.1f s "
		  "(--worker-timeout %.3g s); it last reported %llu requests%s"
		  "%s%s, sending SIGKILL",
		  s->id, (int)p->pid, age, cfg->worker_timeout,
		  (unsigned long long)p->requests,
		  activity[0] ? " and was busy with \"" : "", activity,
		  activity[0] ? "\"" : "");
	slot_event(s, SEV_OVERRUN, p);
}

/*
 * The periodic check.  It runs every check_interval; when it runs much
 * later than that, the master itself did not run in between: stopped
 * (SIGSTOP, a debugger) or frozen with its workers (the freezer cgroup,
 * `docker pause`).  The workers' silence over that time says nothing
 * about them, so they get that time back before their heartbeats are
 * judged, instead of all being killed as hung after a thaw.
 */
void fpool__pool_check(struct fpool_pool *pool)
{
	double now = fpool__now(), late;

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
	for (unsigned i = 0; i < pool->nslots; i++) {
		struct fpool__slot *s = pool->slots[i];
		struct fpool__proc *v[3];

		if (s == NULL)
			continue;
		/* Safety net should the backoff timer not have fired. */
		if (s->backoff && now > s->due + 1)
			slot_event(s, SEV_DUE, NULL);
		v[0] = s->cur;
		v[1] = s->next;
		v[2] = s->old;
		for (int k = 0; k < 3; k++)
			if (v[k] != NULL)
				check_proc(s, v[k], now);
	}
	fpool__pool_recycle(pool);
}

/*
 * A sink fell behind (sink.c): stop reading the workers' output pipes,
 * and each channel at its first log record (proc.c), until it catches up
 * or is given up on, so that workers that log wait in their own writes
 * (back-pressure) instead of the master queueing without bound.  A
 * "ready" still gets through; heartbeats may wait behind a record, so
 * that time is not held against the workers either.
 */
void fpool__pool_pressure(bool congested, void *arg)
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
