/*
 * One worker slot: its state table.
 *
 * A slot is a logical id (0..N-1) that survives respawns, as in
 * aioworkerpool.  It holds up to three processes:
 *   cur   its worker;
 *   next  a replacement (rolling reload, recycle), until it is ready;
 *   old   the worker that replacement took over from, while it drains.
 * A process is STARTING until it says "ready", then READY, and STOPPING
 * once told to stop.
 *
 * Every change of a slot and of its processes' states happens here, in
 * fpool__slot_dispatch(): the slot's state and an event select a handler
 * from `table` below (s6-supervise's state x event -> action); the handler
 * changes the slot's memory and says what must be done -- fork, signal,
 * free, back off, and what the pool must hear of -- in a decision that
 * the caller (supervise.c) carries out.  No system call is made here, so
 * tests/unit/test-slot.c drives every transition without forking.
 *
 * The slot's state is one variable, s->state, written only by settle()
 * at the end of every dispatch, from the processes the slot holds.
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "fpool-int.h"

typedef void (*slot_handler)(struct fpool__slot *s, struct fpool__proc *p,
			     const struct fpool__slot_facts *f,
			     struct fpool__decision *d);

static const char *const state_names[SLOT_NSTATES] = {
	[SLOT_IDLE] = "idle",		[SLOT_BACKOFF] = "backoff",
	[SLOT_STARTING] = "starting",	[SLOT_READY] = "ready",
	[SLOT_REPLACING] = "replacing", [SLOT_DRAINING] = "draining",
	[SLOT_STOPPING] = "stopping",
};

const char *fpool__slot_state_name(enum fpool__slot_state state)
{
	return (unsigned)state < SLOT_NSTATES ? state_names[state] : "?";
}

/* The slot's state, from the processes it holds (the one place that
 * says what a combination of them is called). */
static void settle(struct fpool__slot *s)
{
	if (s->cur == NULL && s->next == NULL && s->old == NULL)
		s->state = s->backoff ? SLOT_BACKOFF : SLOT_IDLE;
	else if (s->next != NULL)
		s->state = SLOT_REPLACING;
	else if (s->cur == NULL || s->cur->state == PROC_STOPPING)
		s->state = SLOT_STOPPING; /* only processes on their way out */
	else if (s->old != NULL)
		s->state = SLOT_DRAINING;
	else
		s->state = s->cur->state == PROC_READY ? SLOT_READY
						       : SLOT_STARTING;
}

void fpool__slot_adopted(struct fpool__slot *s)
{
	settle(s);
}

/* ---- what the handlers decide ---------------------------------------- */

static void spawn(struct fpool__slot *s, enum fpool__role role,
		  struct fpool__decision *d)
{
	d->act |= FPOOL_ACT_SPAWN;
	d->role = role;
	s->spawning = role;
}

/* Tell p to stop: SIGTERM (graceful) or SIGINT.  A process already
 * stopping gracefully is told again only to hurry (an interrupt). */
static void stop(struct fpool__proc *p, bool graceful,
		 struct fpool__decision *d)
{
	if (p == NULL || (p->state == PROC_STOPPING && graceful))
		return;
	d->act |= FPOOL_ACT_SIGNAL;
	d->sig[d->nsig].p = p;
	d->sig[d->nsig].sig = graceful ? SIGTERM : SIGINT;
	/* The stop deadline runs from the first stop only. */
	d->sig[d->nsig].deadline = p->state != PROC_STOPPING;
	d->nsig++;
	p->state = PROC_STOPPING;
}

static void back_off(struct fpool__slot *s, double delay, double now,
		     struct fpool__decision *d)
{
	s->backoff = true;
	s->due = now + delay;
	d->act |= FPOOL_ACT_BACKOFF;
	d->delay = delay;
}

/* p leaves the slot (it exited): the caller frees it. */
static void gone(struct fpool__proc *p, struct fpool__decision *d)
{
	d->act |= FPOOL_ACT_FREE | FPOOL_ACT_GONE;
	d->gone = p;
}

/* ---- the handlers ------------------------------------------------------ */

/* The pool wants a worker here now (start, add, respawn). */
static void on_start(struct fpool__slot *s, struct fpool__proc *p,
		     const struct fpool__slot_facts *f,
		     struct fpool__decision *d)
{
	(void)p;
	if (!s->wanted || !f->running || s->cur != NULL || s->next != NULL)
		return;
	s->backoff = false;
	d->act |= FPOOL_ACT_UNBACKOFF;
	spawn(s, ROLE_CUR, d);
}

/* The slot is wanted (again): `add`, SIGTTIN.  A slot in backoff waits
 * for its delay; one still stopping is respawned when its worker exits. */
static void on_add(struct fpool__slot *s, struct fpool__proc *p,
		   const struct fpool__slot_facts *f, struct fpool__decision *d)
{
	s->wanted = true;
	s->failed = 0;
	if (!s->backoff)
		on_start(s, p, f, d);
}

/* A rolling reload or a recycle: start a replacement beside the worker.
 * Only a ready worker with no other process beside it is replaced, so a
 * slot never holds more than one extra process. */
static void on_replace(struct fpool__slot *s, struct fpool__proc *p,
		       const struct fpool__slot_facts *f,
		       struct fpool__decision *d)
{
	(void)p;
	if (!f->running || s->old != NULL)
		return;
	s->recycling = f->recycle;
	spawn(s, ROLE_NEXT, d);
}

/* The fork asked for worked: p takes the role it was forked for. */
static void on_spawned(struct fpool__slot *s, struct fpool__proc *p,
		       const struct fpool__slot_facts *f,
		       struct fpool__decision *d)
{
	(void)f;
	(void)d;
	p->slot = s;
	p->state = PROC_STARTING;
	if (s->spawning == ROLE_NEXT)
		s->next = p;
	else
		s->cur = p;
	s->restarts++;
}

/* The fork failed: a slot with no worker waits a second before trying
 * again; a failed replacement leaves the old worker serving. */
static void on_spawn_failed(struct fpool__slot *s, struct fpool__proc *p,
			    const struct fpool__slot_facts *f,
			    struct fpool__decision *d)
{
	(void)p;
	if (s->spawning == ROLE_NEXT) {
		d->act |= FPOOL_ACT_REPLACE_FAILED;
		if (s->recycling && s->cur != NULL)
			s->cur->recycle_after = f->now + FPOOL_RECYCLE_RETRY;
		return;
	}
	back_off(s, 1.0, f->now, d);
	snprintf(d->why, sizeof(d->why), "cannot start a worker");
}

/* p said "ready".  A replacement takes the slot over: the worker it
 * replaces drains (graceful stop). */
static void on_ready(struct fpool__slot *s, struct fpool__proc *p,
		     const struct fpool__slot_facts *f,
		     struct fpool__decision *d)
{
	struct fpool__proc *was = s->cur;

	if (p->state != PROC_STARTING)
		return; /* a late or repeated "ready" changes nothing */
	p->state = PROC_READY;
	p->ready_at = f->now;
	d->act |= FPOOL_ACT_READY;
	if (p != s->next)
		return;
	s->cur = p;
	s->next = NULL;
	if (was != NULL) {
		s->old = was;
		stop(was, true, d);
	}
	d->act |= FPOOL_ACT_TOOK_OVER;
}

/* A process of the slot exited. */
static void on_exit(struct fpool__slot *s, struct fpool__proc *p,
		    const struct fpool__slot_facts *f,
		    struct fpool__decision *d)
{
	bool failed_start, stopping = p->state == PROC_STOPPING;

	gone(p, d);
	if (p == s->old) {
		s->old = NULL;
		return;
	}
	if (p == s->next) {
		/* The replacement died before it took over: the reload or
		 * recycle is abandoned; the worker it was to replace serves
		 * on -- unless it went meanwhile. */
		s->next = NULL;
		d->act |= FPOOL_ACT_REPLACE_FAILED;
		if (s->recycling && s->cur != NULL)
			s->cur->recycle_after = f->now + FPOOL_RECYCLE_RETRY;
		if (s->cur == NULL)
			on_start(s, NULL, f, d);
		return;
	}
	if (p != s->cur)
		return;
	s->cur = NULL;
	/* Its replacement is on its way and takes the slot when ready:
	 * forking a third process now would only be drained. */
	if (s->next != NULL)
		return;
	if (!s->wanted || !f->running)
		return;
	/* A worker stopped on purpose (kill, recycle) is not a failure. */
	failed_start = !stopping && (p->ready_at == 0 ||
				     f->now - p->ready_at < f->min_uptime);
	s->failed = failed_start ? s->failed + 1 : 0;
	if (failed_start)
		d->act |= FPOOL_ACT_FAILED_START;
	if (fpool__backoff_delay(s->failed) > 0) {
		back_off(s, fpool__backoff_delay(s->failed), f->now, d);
		snprintf(d->why, sizeof(d->why), "%u failed starts in a row",
			 s->failed);
		return;
	}
	spawn(s, ROLE_CUR, d);
}

/* Stop every process of the slot: `remove`, or the pool stops. */
static void on_stop(struct fpool__slot *s, struct fpool__proc *p,
		    const struct fpool__slot_facts *f,
		    struct fpool__decision *d)
{
	(void)p;
	if (f->unwant)
		s->wanted = false;
	if (s->backoff) {
		s->backoff = false;
		d->act |= FPOOL_ACT_UNBACKOFF;
	}
	stop(s->cur, f->graceful, d);
	stop(s->next, f->graceful, d);
	stop(s->old, f->graceful, d);
}

/* Stop the slot's worker (`kill ID TERM|INT`); it is then replaced as
 * after any exit, and its exit is not a failed start. */
static void on_kill(struct fpool__slot *s, struct fpool__proc *p,
		    const struct fpool__slot_facts *f,
		    struct fpool__decision *d)
{
	(void)p;
	stop(s->cur, f->graceful, d);
}

/* The backoff delay passed. */
static void on_due(struct fpool__slot *s, struct fpool__proc *p,
		   const struct fpool__slot_facts *f, struct fpool__decision *d)
{
	if (s->backoff)
		on_start(s, p, f, d);
}

/* p overran: hung (no heartbeat for --worker-timeout), or still running
 * --graceful-timeout after it was told to stop.  SIGKILL, once. */
static void on_overrun(struct fpool__slot *s, struct fpool__proc *p,
		       const struct fpool__slot_facts *f,
		       struct fpool__decision *d)
{
	(void)s;
	(void)f;
	if (p->killed)
		return;
	p->killed = true;
	d->act |= FPOOL_ACT_SIGNAL;
	d->sig[d->nsig].p = p;
	d->sig[d->nsig].sig = SIGKILL;
	d->sig[d->nsig].deadline = false;
	d->nsig++;
}

/*
 * The table: what each event does in each state.  NULL: nothing (the
 * event does not apply there, e.g. a replacement asked of a slot that is
 * not simply ready).  SPAWNED and SPAWN_FAILED follow a SPAWN decision,
 * READY, EXIT and OVERRUN come from a process, in any state that has one.
 * A SPAWN decision leaves the slot idle, ready or stopping (on_start
 * needs no current or next process and clears the backoff; on_replace
 * acts in "ready"), so only those states take SPAWNED and SPAWN_FAILED;
 * tests/unit/test-slot.c checks that what is forked always lands in the
 * slot and that every entry here is reached.
 */
static const slot_handler table[SLOT_NSTATES][SEV_NEVENTS] = {
	[SLOT_IDLE] = {
		[SEV_START] = on_start, [SEV_ADD] = on_add,
		[SEV_SPAWNED] = on_spawned,
		[SEV_SPAWN_FAILED] = on_spawn_failed, [SEV_STOP] = on_stop,
	},
	[SLOT_BACKOFF] = {
		[SEV_DUE] = on_due, [SEV_ADD] = on_add, [SEV_STOP] = on_stop,
	},
	[SLOT_STARTING] = {
		[SEV_ADD] = on_add, [SEV_READY] = on_ready,
		[SEV_EXIT] = on_exit, [SEV_STOP] = on_stop,
		[SEV_KILL] = on_kill, [SEV_OVERRUN] = on_overrun,
		[SEV_DUE] = on_due,
	},
	[SLOT_READY] = {
		[SEV_ADD] = on_add, [SEV_REPLACE] = on_replace,
		[SEV_SPAWNED] = on_spawned,
		[SEV_SPAWN_FAILED] = on_spawn_failed, [SEV_READY] = on_ready,
		[SEV_EXIT] = on_exit, [SEV_STOP] = on_stop,
		[SEV_KILL] = on_kill, [SEV_OVERRUN] = on_overrun,
		[SEV_DUE] = on_due,
	},
	[SLOT_REPLACING] = {
		[SEV_ADD] = on_add, [SEV_READY] = on_ready,
		[SEV_EXIT] = on_exit, [SEV_STOP] = on_stop,
		[SEV_KILL] = on_kill, [SEV_OVERRUN] = on_overrun,
		[SEV_DUE] = on_due,
	},
	[SLOT_DRAINING] = {
		[SEV_ADD] = on_add, [SEV_READY] = on_ready,
		[SEV_EXIT] = on_exit, [SEV_STOP] = on_stop,
		[SEV_KILL] = on_kill, [SEV_OVERRUN] = on_overrun,
		[SEV_DUE] = on_due,
	},
	[SLOT_STOPPING] = {
		[SEV_ADD] = on_add, [SEV_SPAWNED] = on_spawned,
		[SEV_SPAWN_FAILED] = on_spawn_failed, [SEV_READY] = on_ready,
		[SEV_EXIT] = on_exit, [SEV_STOP] = on_stop,
		[SEV_KILL] = on_kill, [SEV_OVERRUN] = on_overrun,
		[SEV_DUE] = on_due,
	},
};

void fpool__slot_dispatch(struct fpool__slot *s, enum fpool__slot_event ev,
			  struct fpool__proc *p,
			  const struct fpool__slot_facts *f,
			  struct fpool__decision *d)
{
	slot_handler h = NULL;

	memset(d, 0, sizeof(*d));
	if ((unsigned)s->state < SLOT_NSTATES && (unsigned)ev < SEV_NEVENTS)
		h = table[s->state][ev];
	if (h != NULL)
		h(s, p, f, d);
	settle(s);
}

bool fpool__slot_handles(enum fpool__slot_state state,
			 enum fpool__slot_event ev)
{
	return (unsigned)state < SLOT_NSTATES && (unsigned)ev < SEV_NEVENTS &&
	       table[state][ev] != NULL;
}

unsigned fpool__slot_live(const struct fpool__slot *s)
{
	return (s->cur != NULL) + (s->next != NULL) + (s->old != NULL);
}

struct fpool__proc *fpool__slot_find(struct fpool__slot *s, pid_t pid)
{
	struct fpool__proc *v[3] = { s->cur, s->next, s->old };

	for (int i = 0; i < 3; i++)
		if (v[i] != NULL && v[i]->pid == pid)
			return v[i];
	return NULL;
}
