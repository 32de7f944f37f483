/*
 * Unit tests for slot.c: the slot state table, driven without forking.
 * Each test feeds events to fpool__slot_dispatch() and checks the state
 * the slot ends in and the decision (what the master would do: fork,
 * signal, free, back off, tell the pool).  Processes are plain records;
 * the "fork" is the test making one and reporting SEV_SPAWNED.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

/* A slot with its procs, and the clock the facts carry. */
struct bench {
	struct fpool__slot s;
	struct fpool__proc procs[64];
	unsigned nprocs;
	struct fpool__slot_facts f;
	struct fpool__decision d;
};

static struct bench *bench_new(void)
{
	struct bench *b = calloc(1, sizeof(*b));

	assert_non_null(b);
	b->s.wanted = true;
	b->s.state = SLOT_IDLE;
	b->f.running = true;
	b->f.graceful = true;
	b->f.min_uptime = 1;
	b->f.now = 100;
	return b;
}

/* How often each (state, event) entry was dispatched, over all the tests
 * (cmocka runs them in order in this process): the last test checks that
 * every entry of the table was reached. */
static unsigned reached[SLOT_NSTATES][SEV_NEVENTS];

static unsigned ev(struct bench *b, enum fpool__slot_event e,
		   struct fpool__proc *p)
{
	if ((unsigned)b->s.state < SLOT_NSTATES)
		reached[b->s.state][e]++;
	fpool__slot_dispatch(&b->s, e, p, &b->f, &b->d);
	return b->d.act;
}

/* Carry out a SPAWN decision the way supervise.c does: a new process,
 * reported back.  Returns it. */
static struct fpool__proc *fork_ok(struct bench *b)
{
	struct fpool__proc *p = &b->procs[b->nprocs++];

	assert_true(b->d.act & FPOOL_ACT_SPAWN);
	memset(p, 0, sizeof(*p));
	p->pid = 1000 + (pid_t)b->nprocs;
	p->started = b->f.now;
	ev(b, SEV_SPAWNED, p);
	return p;
}

/* IDLE -> STARTING -> READY: a worker, started and ready. */
static struct fpool__proc *ready_worker(struct bench *b)
{
	struct fpool__proc *p;

	assert_true(ev(b, SEV_START, NULL) & FPOOL_ACT_SPAWN);
	assert_int_equal(b->d.role, ROLE_CUR);
	p = fork_ok(b);
	assert_int_equal(b->s.state, SLOT_STARTING);
	assert_ptr_equal(b->s.cur, p);
	assert_true(ev(b, SEV_READY, p) & FPOOL_ACT_READY);
	assert_int_equal(b->s.state, SLOT_READY);
	assert_int_equal(p->state, PROC_READY);
	return p;
}

static void test_start_ready(void **state)
{
	struct bench *b = bench_new();

	(void)state;
	ready_worker(b);
	assert_int_equal(b->s.restarts, 1);
	/* A repeated "ready" changes nothing. */
	assert_int_equal(ev(b, SEV_READY, b->s.cur), 0);
	assert_int_equal(b->s.state, SLOT_READY);
	free(b);
}

static void test_start_needs_wanted_and_running(void **state)
{
	struct bench *b = bench_new();

	(void)state;
	b->s.wanted = false;
	assert_int_equal(ev(b, SEV_START, NULL), 0);
	b->s.wanted = true;
	b->f.running = false;
	assert_int_equal(ev(b, SEV_START, NULL), 0);
	assert_int_equal(b->s.state, SLOT_IDLE);
	free(b);
}

static void test_healthy_exit_respawns_at_once(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);
	unsigned act;

	(void)state;
	b->f.now += 60; /* long past --min-uptime */
	act = ev(b, SEV_EXIT, p);
	assert_true(act & FPOOL_ACT_FREE);
	assert_ptr_equal(b->d.gone, p);
	assert_true(act & FPOOL_ACT_GONE);
	assert_false(act & FPOOL_ACT_FAILED_START);
	assert_true(act & FPOOL_ACT_SPAWN);
	assert_int_equal(b->s.failed, 0);
	fork_ok(b);
	assert_int_equal(b->s.state, SLOT_STARTING);
	free(b);
}

/* DESIGN.md, "Restart policy": two failed starts are retried at once,
 * the third waits 0.1 s, the wait doubles; a healthy run resets it. */
static void test_failed_starts_back_off(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p;
	unsigned act;

	(void)state;
	ev(b, SEV_START, NULL);
	for (unsigned k = 1; k <= 2; k++) {
		p = fork_ok(b);
		act = ev(b, SEV_EXIT, p); /* before ready */
		assert_true(act & FPOOL_ACT_FAILED_START);
		assert_true(act & FPOOL_ACT_SPAWN);
		assert_int_equal(b->s.failed, k);
	}
	p = fork_ok(b);
	act = ev(b, SEV_EXIT, p);
	assert_true(act & FPOOL_ACT_FAILED_START);
	assert_false(act & FPOOL_ACT_SPAWN);
	assert_true(act & FPOOL_ACT_BACKOFF);
	assert_true(b->d.delay > 0.099 && b->d.delay < 0.101);
	assert_non_null(strstr(b->d.why, "3 failed starts"));
	assert_int_equal(b->s.state, SLOT_BACKOFF);
	/* Nothing starts it early; the delay does. */
	assert_int_equal(ev(b, SEV_START, NULL), 0);
	assert_int_equal(ev(b, SEV_ADD, NULL), 0);
	assert_int_equal(b->s.failed, 0); /* add resets the count */
	act = ev(b, SEV_DUE, NULL);
	assert_true(act & FPOOL_ACT_SPAWN);
	assert_true(act & FPOOL_ACT_UNBACKOFF);
	p = fork_ok(b);
	ev(b, SEV_READY, p);
	b->f.now += 0.5; /* dies before --min-uptime: still a failure */
	assert_true(ev(b, SEV_EXIT, p) & FPOOL_ACT_FAILED_START);
	free(b);
}

static void test_spawn_failure_waits_a_second(void **state)
{
	struct bench *b = bench_new();
	unsigned act;

	(void)state;
	ev(b, SEV_START, NULL);
	act = ev(b, SEV_SPAWN_FAILED, NULL);
	assert_true(act & FPOOL_ACT_BACKOFF);
	assert_true(b->d.delay == 1.0);
	assert_int_equal(b->s.state, SLOT_BACKOFF);
	free(b);
}

static void test_stop_signals_once_then_hurries(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);
	unsigned act;

	(void)state;
	act = ev(b, SEV_STOP, NULL);
	assert_true(act & FPOOL_ACT_SIGNAL);
	assert_int_equal(b->d.nsig, 1);
	assert_ptr_equal(b->d.sig[0].p, p);
	assert_int_equal(b->d.sig[0].sig, SIGTERM);
	assert_true(b->d.sig[0].deadline);
	assert_int_equal(b->s.state, SLOT_STOPPING);
	/* Again, graceful: nothing new.  An interrupt is passed on, but the
	 * first deadline stands. */
	assert_int_equal(ev(b, SEV_STOP, NULL), 0);
	b->f.graceful = false;
	ev(b, SEV_STOP, NULL);
	assert_int_equal(b->d.nsig, 1);
	assert_int_equal(b->d.sig[0].sig, SIGINT);
	assert_false(b->d.sig[0].deadline);
	/* Its exit is no failure; the pool is stopping: no respawn. */
	b->f.running = false;
	act = ev(b, SEV_EXIT, p);
	assert_false(act & (FPOOL_ACT_FAILED_START | FPOOL_ACT_SPAWN));
	assert_int_equal(b->s.state, SLOT_IDLE);
	free(b);
}

static void test_kill_is_no_failed_start(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);
	unsigned act;

	(void)state;
	act = ev(b, SEV_KILL, NULL);
	assert_true(act & FPOOL_ACT_SIGNAL);
	assert_int_equal(b->d.sig[0].sig, SIGTERM);
	act = ev(b, SEV_EXIT, p); /* at once, well within --min-uptime */
	assert_false(act & FPOOL_ACT_FAILED_START);
	assert_true(act & FPOOL_ACT_SPAWN);
	free(b);
}

static void test_overrun_kills_once(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);

	(void)state;
	assert_true(ev(b, SEV_OVERRUN, p) & FPOOL_ACT_SIGNAL);
	assert_int_equal(b->d.sig[0].sig, SIGKILL);
	assert_true(p->killed);
	assert_int_equal(ev(b, SEV_OVERRUN, p), 0);
	/* A hung worker's death counts as a failure only if it was young:
	 * this one was not killed on purpose (no stop), but lived long. */
	b->f.now += 60;
	assert_false(ev(b, SEV_EXIT, p) & FPOOL_ACT_FAILED_START);
	free(b);
}

/* The rolling reload: replacement, take-over, drain. */
static void test_replace_take_over_drain(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *old = ready_worker(b), *p;
	unsigned act;

	(void)state;
	act = ev(b, SEV_REPLACE, NULL);
	assert_true(act & FPOOL_ACT_SPAWN);
	assert_int_equal(b->d.role, ROLE_NEXT);
	p = fork_ok(b);
	assert_ptr_equal(b->s.next, p);
	assert_int_equal(b->s.state, SLOT_REPLACING);
	/* Not twice at once. */
	assert_int_equal(ev(b, SEV_REPLACE, NULL), 0);
	act = ev(b, SEV_READY, p);
	assert_true(act & FPOOL_ACT_TOOK_OVER);
	assert_true(act & FPOOL_ACT_READY);
	assert_ptr_equal(b->s.cur, p);
	assert_ptr_equal(b->s.old, old);
	assert_null(b->s.next);
	assert_int_equal(b->d.sig[0].sig, SIGTERM);
	assert_ptr_equal(b->d.sig[0].p, old);
	assert_int_equal(b->s.state, SLOT_DRAINING);
	/* Not again while the old one drains. */
	assert_int_equal(ev(b, SEV_REPLACE, NULL), 0);
	act = ev(b, SEV_EXIT, old);
	assert_true(act & FPOOL_ACT_GONE);
	assert_false(act & (FPOOL_ACT_SPAWN | FPOOL_ACT_FAILED_START));
	assert_int_equal(b->s.state, SLOT_READY);
	free(b);
}

static void test_replacement_dies_before_ready(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *cur = ready_worker(b), *p;
	unsigned act;

	(void)state;
	b->f.recycle = true;
	ev(b, SEV_REPLACE, NULL);
	p = fork_ok(b);
	act = ev(b, SEV_EXIT, p);
	assert_true(act & FPOOL_ACT_REPLACE_FAILED);
	assert_false(act & FPOOL_ACT_SPAWN);
	assert_ptr_equal(b->s.cur, cur);
	assert_int_equal(b->s.state, SLOT_READY);
	/* A recycle that failed is tried again later. */
	assert_true(cur->recycle_after >= b->f.now + FPOOL_RECYCLE_RETRY);
	free(b);
}

static void test_replacement_fork_fails(void **state)
{
	struct bench *b = bench_new();

	(void)state;
	ready_worker(b);
	ev(b, SEV_REPLACE, NULL);
	assert_true(ev(b, SEV_SPAWN_FAILED, NULL) & FPOOL_ACT_REPLACE_FAILED);
	assert_int_equal(b->s.state, SLOT_READY);
	free(b);
}

/* The worker dies while its replacement starts: no third process; the
 * replacement takes the slot when ready, with nothing to drain. */
static void test_worker_dies_during_replace(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *cur = ready_worker(b), *p;
	unsigned act;

	(void)state;
	ev(b, SEV_REPLACE, NULL);
	p = fork_ok(b);
	b->f.now += 60;
	act = ev(b, SEV_EXIT, cur);
	assert_false(act & FPOOL_ACT_SPAWN);
	assert_null(b->s.cur);
	assert_int_equal(b->s.state, SLOT_REPLACING);
	act = ev(b, SEV_READY, p);
	assert_true(act & FPOOL_ACT_TOOK_OVER);
	assert_int_equal(b->d.nsig, 0);
	assert_int_equal(b->s.state, SLOT_READY);
	free(b);
}

/* Both die: the replacement's death starts a worker again. */
static void test_both_die_during_replace(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *cur = ready_worker(b), *p;
	unsigned act;

	(void)state;
	ev(b, SEV_REPLACE, NULL);
	p = fork_ok(b);
	ev(b, SEV_EXIT, cur);
	act = ev(b, SEV_EXIT, p);
	assert_true(act & FPOOL_ACT_REPLACE_FAILED);
	assert_true(act & FPOOL_ACT_SPAWN);
	assert_int_equal(b->d.role, ROLE_CUR);
	fork_ok(b);
	assert_int_equal(b->s.state, SLOT_STARTING);
	free(b);
}

/* `remove`: the slot is not wanted, its worker stops and is not
 * replaced; `add` wants it again. */
static void test_remove_then_add(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);
	unsigned act;

	(void)state;
	b->f.unwant = true;
	act = ev(b, SEV_STOP, NULL);
	b->f.unwant = false;
	assert_false(b->s.wanted);
	assert_int_equal(b->d.sig[0].sig, SIGTERM);
	/* Wanted again while it stops: respawned when it exits. */
	assert_int_equal(ev(b, SEV_ADD, NULL), 0);
	assert_true(b->s.wanted);
	act = ev(b, SEV_EXIT, p);
	assert_true(act & FPOOL_ACT_SPAWN);
	assert_false(act & FPOOL_ACT_FAILED_START);
	(void)act;
	free(b);
}

static void test_removed_slot_stays_idle(void **state)
{
	struct bench *b = bench_new();
	struct fpool__proc *p = ready_worker(b);

	(void)state;
	b->f.unwant = true;
	ev(b, SEV_STOP, NULL);
	assert_false(ev(b, SEV_EXIT, p) & FPOOL_ACT_SPAWN);
	assert_int_equal(b->s.state, SLOT_IDLE);
	assert_true(ev(b, SEV_ADD, NULL) & FPOOL_ACT_SPAWN);
	free(b);
}

/* The states and the processes agree, whatever happens: random events
 * over many rounds, the invariants checked after each. */
static void check_invariants(const struct fpool__slot *s)
{
	const struct fpool__proc *v[3] = { s->cur, s->next, s->old };

	for (int i = 0; i < 3; i++)
		for (int k = i + 1; k < 3; k++)
			assert_true(v[i] == NULL || v[i] != v[k]);
	if (s->next != NULL) {
		/* Starting, or told to stop before it was ready. */
		assert_int_equal(s->state, SLOT_REPLACING);
		assert_true(s->next->state != PROC_READY);
		assert_null(s->old);
	}
	if (s->old != NULL)
		assert_int_equal(s->old->state, PROC_STOPPING);
	switch (s->state) {
	case SLOT_IDLE:
	case SLOT_BACKOFF:
		assert_int_equal(fpool__slot_live(s), 0);
		assert_int_equal(s->backoff, s->state == SLOT_BACKOFF);
		break;
	case SLOT_STARTING:
		assert_int_equal(s->cur->state, PROC_STARTING);
		break;
	case SLOT_READY:
		assert_int_equal(s->cur->state, PROC_READY);
		assert_int_equal(fpool__slot_live(s), 1);
		break;
	case SLOT_DRAINING:
		assert_non_null(s->old);
		assert_true(s->cur->state != PROC_STOPPING);
		break;
	case SLOT_REPLACING:
		break;
	case SLOT_STOPPING:
		assert_true(s->cur == NULL || s->cur->state == PROC_STOPPING);
		break;
	default:
		fail_msg("state %d", s->state);
	}
}

static void test_random_events_keep_invariants(void **state)
{
	struct bench *b = bench_new();

	(void)state;
	srandom(12345);
	for (int round = 0; round < 200000; round++) {
		struct fpool__slot *s = &b->s;
		struct fpool__proc *v[3], *p = NULL;
		unsigned n = 0;
		enum fpool__slot_event e =
			(enum fpool__slot_event)(random() % SEV_NEVENTS);

		/* A process event is about one of the slot's processes. */
		if (s->cur != NULL)
			v[n++] = s->cur;
		if (s->next != NULL)
			v[n++] = s->next;
		if (s->old != NULL)
			v[n++] = s->old;
		if (n > 0)
			p = v[random() % n];
		/* Stops are rarer than the rest, or the walk would spend its
		 * time in "stopping" and seldom see a replacement through. */
		if ((e == SEV_STOP || e == SEV_KILL) && random() % 4 != 0)
			continue;

		b->f.now += (double)(random() % 2000) / 1000;
		b->f.graceful = random() % 4 != 0;
		b->f.unwant = random() % 8 == 0;
		b->f.running = random() % 16 != 0;
		b->f.recycle = random() % 2;
		/* Only events that can happen: a process event needs a
		 * process; SPAWNED/SPAWN_FAILED follow a SPAWN decision. */
		if (e == SEV_SPAWNED || e == SEV_SPAWN_FAILED)
			continue;
		if ((e == SEV_READY || e == SEV_EXIT || e == SEV_OVERRUN) &&
		    p == NULL)
			continue;
		ev(b, e, p);
		if (b->d.act & FPOOL_ACT_FREE)
			memset(b->d.gone, 0x5a, sizeof(*b->d.gone));
		if (b->d.act & FPOOL_ACT_SPAWN) {
			if (b->nprocs == FPOOL_NELEM(b->procs))
				b->nprocs = 0; /* reuse: the old ones left */
			if (random() % 8 == 0) {
				ev(b, SEV_SPAWN_FAILED, NULL);
			} else {
				unsigned i;

				/* A record not in use by the slot. */
				do {
					i = (unsigned)random() %
					    FPOOL_NELEM(b->procs);
				} while (&b->procs[i] == s->cur ||
					 &b->procs[i] == s->next ||
					 &b->procs[i] == s->old);
				memset(&b->procs[i], 0, sizeof(b->procs[i]));
				b->procs[i].started = b->f.now;
				ev(b, SEV_SPAWNED, &b->procs[i]);
				/* The slot holds what was forked for it. */
				assert_true(s->cur == &b->procs[i] ||
					    s->next == &b->procs[i]);
			}
		}
		check_invariants(s);
	}
	free(b);
}

static void test_state_names(void **state)
{
	(void)state;
	assert_string_equal(fpool__slot_state_name(SLOT_IDLE), "idle");
	assert_string_equal(fpool__slot_state_name(SLOT_DRAINING), "draining");
	assert_string_equal(fpool__slot_state_name(SLOT_NSTATES), "?");
}

/* Every entry of the table was reached by the tests above (run last). */
static void test_every_table_entry_is_reached(void **state)
{
	unsigned entries = 0, missed = 0;

	(void)state;
	for (int st = 0; st < SLOT_NSTATES; st++)
		for (int e = 0; e < SEV_NEVENTS; e++) {
			if (!fpool__slot_handles(st, e))
				continue;
			entries++;
			if (reached[st][e] == 0) {
				print_message("never reached: state %s, "
					      "event %d\n",
					      fpool__slot_state_name(st), e);
				missed++;
			}
		}
	print_message("%u table entries, all reached: %s\n", entries,
		      missed == 0 ? "yes" : "no");
	assert_true(entries > 0);
	assert_int_equal(missed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_start_ready),
		cmocka_unit_test(test_start_needs_wanted_and_running),
		cmocka_unit_test(test_healthy_exit_respawns_at_once),
		cmocka_unit_test(test_failed_starts_back_off),
		cmocka_unit_test(test_spawn_failure_waits_a_second),
		cmocka_unit_test(test_stop_signals_once_then_hurries),
		cmocka_unit_test(test_kill_is_no_failed_start),
		cmocka_unit_test(test_overrun_kills_once),
		cmocka_unit_test(test_replace_take_over_drain),
		cmocka_unit_test(test_replacement_dies_before_ready),
		cmocka_unit_test(test_replacement_fork_fails),
		cmocka_unit_test(test_worker_dies_during_replace),
		cmocka_unit_test(test_both_die_during_replace),
		cmocka_unit_test(test_remove_then_add),
		cmocka_unit_test(test_removed_slot_stays_idle),
		cmocka_unit_test(test_random_events_keep_invariants),
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_every_table_entry_is_reached),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
