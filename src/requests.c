/*
 * The operator's requests -- add, remove, scale, kill, from the control
 * socket, SIGTTIN/SIGTTOU or the public API -- as events of the slots'
 * state table (supervise.c carries them out), and what the control
 * socket shows of the slots.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

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

int fpool__pool_make_slots(struct fpool_pool *pool, unsigned n)
{
	int err = pool_grow(pool, n);

	for (unsigned i = 0; err == 0 && i < n; i++) {
		pool->slots[i] = fpool__slot_new(pool, i);
		if (pool->slots[i] == NULL)
			err = -ENOMEM;
		else
			pool->slots[i]->wanted = true;
	}
	return err;
}

void fpool__pool_start_slots(struct fpool_pool *pool)
{
	struct fpool__slot_facts f = fpool__pool_facts(pool);

	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			fpool__slot_event(pool->slots[i], SEV_START, NULL, &f);
}

int fpool_pool_add_worker(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot_facts f;
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
	f = fpool__pool_facts(pool);
	fpool__slot_event(s, SEV_ADD, NULL, &f);
	return 0;
}

int fpool_pool_remove_worker(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot_facts f = fpool__pool_facts(pool);

	if (id >= pool->nslots || pool->slots[id] == NULL ||
	    !pool->slots[id]->wanted)
		return -ENOENT;
	if (fpool_pool_size(pool) <= 1)
		return -EBUSY;
	f.unwant = true;
	fpool__slot_event(pool->slots[id], SEV_STOP, NULL, &f);
	return 0;
}

int fpool__pool_scale(struct fpool_pool *pool, unsigned n)
{
	int err;

	fpool__event_scale(pool, fpool_pool_size(pool), n);
	for (unsigned id = 0; id < n; id++) {
		err = fpool_pool_add_worker(pool, id);
		if (err != 0 && err != -EEXIST)
			return err;
	}
	for (unsigned id = pool->nslots; id-- > n;)
		if (pool->slots[id] != NULL && pool->slots[id]->wanted)
			fpool_pool_remove_worker(pool, id);
	return 0;
}

int fpool__pool_kill(struct fpool_pool *pool, unsigned id, int sig, pid_t *pid)
{
	struct fpool__slot *s = id < pool->nslots ? pool->slots[id] : NULL;
	struct fpool__slot_facts f = fpool__pool_facts(pool);

	if (s == NULL || s->cur == NULL)
		return -ENOENT;
	*pid = s->cur->pid;
	/* A graceful stop gets the usual deadline; the slot is then
	 * respawned as after any exit.  Other signals are only sent. */
	if (sig != SIGTERM && sig != SIGINT)
		return fpool__proc_signal(s->cur, sig);
	f.graceful = sig == SIGTERM;
	fpool__slot_event(s, SEV_KILL, NULL, &f);
	return 0;
}

int fpool__pool_grow_one(struct fpool_pool *pool, unsigned *id)
{
	unsigned from = fpool_pool_size(pool);
	int err;

	/* The lowest id not wanted: scaling up fills the gaps first. */
	*id = 0;
	while (*id < pool->nslots && pool->slots[*id] != NULL &&
	       pool->slots[*id]->wanted)
		(*id)++;
	err = fpool_pool_add_worker(pool, *id);
	if (err == 0)
		fpool__event_scale(pool, from, fpool_pool_size(pool));
	return err;
}

int fpool__pool_shrink_one(struct fpool_pool *pool, unsigned *id)
{
	unsigned from = fpool_pool_size(pool);
	int err;

	/* The highest id wanted. */
	for (*id = pool->nslots; (*id)-- > 0;)
		if (pool->slots[*id] != NULL && pool->slots[*id]->wanted) {
			err = fpool_pool_remove_worker(pool, *id);
			if (err == 0)
				fpool__event_scale(pool, from,
						   fpool_pool_size(pool));
			return err;
		}
	*id = 0;
	return -ENOENT;
}

/* ---- what the control socket shows ----------------------------------------- */

static int each_proc(struct fpool_pool *pool, const struct fpool__slot *s,
		     const struct fpool__proc *p, double now,
		     fpool_pool_snapshot_cb cb, void *arg)
{
	static const char *const states[] = { "starting", "ready", "stopping" };
	char activity[sizeof(((struct fpool__shared *)0)->activity)] = "";
	struct fpool_worker_info i = {
		.id = s->id,
		.pid = p->pid,
		.state = states[p->state],
		.role = p == s->cur    ? "worker"
			: p == s->next ? "replacement"
				       : "draining",
		.generation = p->generation,
		.uptime = now - p->started,
		.heartbeat_age = now - p->last_seen,
		.restarts = s->restarts > 0 ? s->restarts - 1 : 0,
		.last_exit = s->last_exit[0] ? s->last_exit : NULL,
		.requests = p->requests,
		.activity = activity,
	};

	/* The slot's entry is its current worker's. */
	if (p == s->cur)
		fpool__slot_activity(s, activity, sizeof(activity));
	return cb(pool, &i, arg);
}

int fpool_pool_snapshot(struct fpool_pool *pool, fpool_pool_snapshot_cb cb,
			void *arg)
{
	double now = fpool__now();
	int r;

	for (unsigned n = 0; n < pool->nslots; n++) {
		const struct fpool__slot *s = pool->slots[n];
		const struct fpool__proc *v[3];

		if (s == NULL)
			continue;
		v[0] = s->cur;
		v[1] = s->next;
		v[2] = s->old;
		for (int k = 0; k < 3; k++)
			if (v[k] != NULL &&
			    (r = each_proc(pool, s, v[k], now, cb, arg)) != 0)
				return r;
		if (s->cur == NULL && s->state == SLOT_BACKOFF) {
			struct fpool_worker_info i = {
				.id = s->id,
				.state = "backoff",
				.backoff_left = s->due > now ? s->due - now : 0,
				.restarts =
					s->restarts > 0 ? s->restarts - 1 : 0,
				.last_exit =
					s->last_exit[0] ? s->last_exit : NULL,
				.activity = "",
			};

			if ((r = cb(pool, &i, arg)) != 0)
				return r;
		}
	}
	return 0;
}

unsigned fpool__pool_restarts(const struct fpool_pool *pool)
{
	unsigned n = 0;

	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL && pool->slots[i]->restarts > 0)
			n += pool->slots[i]->restarts - 1;
	return n;
}

const struct fpool__ring *fpool__pool_output(const struct fpool_pool *pool,
					     unsigned id)
{
	if (id >= pool->nslots || pool->slots[id] == NULL)
		return NULL;
	return &pool->slots[id]->ring;
}
