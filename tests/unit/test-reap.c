/*
 * Which children the master reaps (supervise.c): its own workers only,
 * unless it is PID 1, a child subreaper or asked to (reap_all).  A
 * program that forks a child of its own while the pool runs waits for it
 * itself; the master does not steal its exit status.
 *
 * The pool here runs for real (it forks workers), from a config made by
 * a program "built against an older header": fpool_config_init_size()
 * with the size of the struct before reap_all, the bytes after it
 * garbage.  The pool works, and takes the default (0) for reap_all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

static int loop_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w);
}

static const struct fpool_worker_def looper = { .name = "looper",
						.main = loop_main };

#define OLD_SIZE offsetof(struct fpool_config, reap_all)

struct run {
	struct fpool_pool *pool;
	struct event *tick;
	pid_t child;	  /* the program's own child */
	double deadline;  /* give up then */
	int waited;	  /* 1: our waitpid() got it; -1: ECHILD (stolen) */
	int status;	  /* what our waitpid() said */
	unsigned started; /* ticks with the pool running */
	unsigned zombie_turns; /* ticks since it became a zombie */
};

/* Every 10 ms: once the workers are up, fork a child of our own that
 * exits at once.  Then look at it without reaping it (WNOWAIT) until it
 * is gone (the master reaped it: waited = -1) or, 20 turns after it
 * became a zombie -- the master's SIGCHLD came and went meanwhile --
 * reap it ourselves (waited = 1). */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;
	siginfo_t si;

	(void)fd;
	(void)what;
	if (r->waited != 0)
		return; /* known; the pool is stopping */
	if (fpool__now() > r->deadline) {
		fpool_pool_stop(r->pool, 1);
		return;
	}
	if (r->child == 0) {
		if (fpool__pool_live(r->pool) < 2 || ++r->started < 5)
			return;
		r->child = fork();
		if (r->child == 0)
			_exit(7);
		assert_true(r->child > 0);
		return;
	}
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)r->child, &si, WEXITED | WNOHANG | WNOWAIT) <
	    0) {
		assert_int_equal(errno, ECHILD);
		r->waited = -1;
	} else if (si.si_pid == r->child && ++r->zombie_turns > 20) {
		assert_int_equal(waitpid(r->child, &r->status, 0), r->child);
		r->waited = 1;
	}
	if (r->waited != 0)
		fpool_pool_stop(r->pool, 1);
}

static void run_pool(struct run *r, int reap_all)
{
	union {
		struct fpool_config cfg;
		unsigned char b[sizeof(struct fpool_config) + 16];
	} u;
	struct timeval tv = { 0, 10000 };

	memset(r, 0, sizeof(*r));
	memset(&u, 0x5a, sizeof(u));
	if (reap_all) {
		fpool_config_init(&u.cfg);
		u.cfg.reap_all = 1;
	} else {
		/* Older header: reap_all's bytes are 0x5a..., not read. */
		fpool_config_init_size(&u.cfg, OLD_SIZE);
	}
	u.cfg.worker = &looper;
	u.cfg.workers = 2;
	u.cfg.graceful_timeout = 5;
	assert_int_equal(fpool_pool_new(&r->pool, &u.cfg), 0);
	assert_int_equal(r->pool->cfg.reap_all, reap_all);
	r->deadline = fpool__now() + 20;
	r->tick =
		event_new(fpool_pool_base(r->pool), -1, EV_PERSIST, tick_cb, r);
	assert_non_null(r->tick);
	assert_int_equal(event_add(r->tick, &tv), 0);
	assert_int_equal(fpool_pool_run(r->pool), 0);
	event_free(r->tick);
	fpool_pool_free(r->pool);
	/* Nothing of ours is left unreaped either way. */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
}

static void test_the_master_leaves_our_child_alone(void **state)
{
	struct run r;
	int sub = 0;

	(void)state;
	assert_int_equal(prctl(PR_GET_CHILD_SUBREAPER, &sub), 0);
	if (getpid() == 1 || sub)
		skip(); /* then it must reap every child */
	run_pool(&r, 0);
	assert_true(r.child > 0);
	assert_int_equal(r.waited, 1);
	assert_true(WIFEXITED(r.status));
	assert_int_equal(WEXITSTATUS(r.status), 7);
}

static void test_reap_all_reaps_our_child(void **state)
{
	struct run r;

	(void)state;
	run_pool(&r, 1);
	assert_true(r.child > 0);
	assert_int_equal(r.waited, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_the_master_leaves_our_child_alone),
		cmocka_unit_test(test_reap_all_reaps_our_child),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
