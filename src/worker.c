/*
 * The child side: what a freshly forked worker does, in DESIGN.md's order.
 *
 *  1. Become a worker (child.c): leave the terminal, let go of the
 *     master's state without undoing it, reset every signal, ask for
 *     SIGTERM when the master dies, close every fd but stdio, the
 *     channel, listeners and preserved fds.
 *  2. Build a fresh loop with SIGTERM/SIGINT events, then unblock signals.
 *  3. setup, then on_start hooks; a failure exits FPOOL_EXIT_START_FAILED.
 *  4. Tell the master "ready", start the heartbeat, run main.
 *  5. on_shutdown hooks, free everything, exit with main's status.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

/* A stopping worker that outlives graceful_timeout by this much is killed
 * by its own timer; normally the master's SIGKILL comes first, so this
 * only matters when the master is gone. */
#define ORPHAN_MARGIN 0.5

struct fpool_worker {
	unsigned id;
	pid_t pid;
	pid_t master_pid;
	struct event_base *base;
	int chan;
	int *listeners;
	size_t nlisteners;
	const struct fpool_worker_def *def;
	int argc;
	char **argv;
	double heartbeat_interval;
	double graceful_timeout;
	struct fpool__hooks on_start, on_stop, on_shutdown;
	struct event *sigterm_ev, *sigint_ev, *heartbeat_ev, *chan_ev;
	int lib_events; /* library events counted in the base (signals) */
	bool stopping, interrupted;
	bool deadline_armed;
	timer_t deadline;
	uint64_t requests;
	void *data;
	struct fpool__shared *shm; /* the slot's activity entry, or NULL */
	void *shm_page;		   /* the page holding it, to unmap */
	uint64_t max_requests;	   /* the master recycles us past this */
	bool limit_told;	   /* the heartbeat at the limit was sent */
	/* fpool_worker_unref(): events that do not hold the drain, known
	 * by address, callback and argument (never dereferenced: the
	 * worker may have freed one). */
	struct unref_entry {
		const struct event *ev;
		event_callback_fn cb;
		void *arg;
	} * unref;
	size_t nunref, unref_cap;
	int unref_live; /* count_unref()'s result */
	/* fpool_worker_on_message(), and the buffer a packet of the
	 * channel is read into (FPOOL_MESSAGE_MAX + 2, made at the first). */
	fpool_worker_message_cb message_cb;
	void *message_arg;
	char *rbuf;
};

unsigned fpool_worker_id(const struct fpool_worker *w)
{
	return w->id;
}

pid_t fpool_worker_pid(const struct fpool_worker *w)
{
	return w->pid;
}

struct event_base *fpool_worker_base(struct fpool_worker *w)
{
	return w->base;
}

const int *fpool_worker_listeners(const struct fpool_worker *w, size_t *n)
{
	*n = w->nlisteners;
	return w->listeners;
}

int fpool_worker_on_start(struct fpool_worker *w, fpool_worker_hook_cb cb,
			  void *arg)
{
	return fpool__hooks_add(&w->on_start, (void (*)(void))cb, arg);
}

int fpool_worker_on_stop(struct fpool_worker *w, fpool_worker_hook_cb cb,
			 void *arg)
{
	return fpool__hooks_add(&w->on_stop, (void (*)(void))cb, arg);
}

int fpool_worker_on_shutdown(struct fpool_worker *w, fpool_worker_hook_cb cb,
			     void *arg)
{
	return fpool__hooks_add(&w->on_shutdown, (void (*)(void))cb, arg);
}

void fpool_worker_set_data(struct fpool_worker *w, void *data)
{
	w->data = data;
}

void *fpool_worker_data(const struct fpool_worker *w)
{
	return w->data;
}

int fpool_worker_interrupted(const struct fpool_worker *w)
{
	return w->interrupted;
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg);

void fpool_worker_count_requests(struct fpool_worker *w, uint64_t n)
{
	w->requests += n;
	/* Past its recycling limit: tell the master now rather than at the
	 * next heartbeat, so each worker retires at its own count. */
	if (w->max_requests > 0 && !w->limit_told &&
	    w->requests >= w->max_requests) {
		w->limit_told = true;
		heartbeat_cb(-1, 0, w);
	}
}

void fpool_worker_set_activity(struct fpool_worker *w, const char *fmt, ...)
{
	va_list ap;

	if (w->shm == NULL)
		return;
	if (fmt == NULL) {
		w->shm->activity[0] = '\0';
		return;
	}
	va_start(ap, fmt);
	vsnprintf(w->shm->activity, sizeof(w->shm->activity), fmt, ap);
	va_end(ap);
}

/* Run a hook list in order; stop at the first failure when `strict`. */
static int run_hooks(struct fpool_worker *w, struct fpool__hooks *h,
		     const char *what, bool strict)
{
	int result = 0;

	for (size_t i = 0; i < h->n; i++) {
		fpool_worker_hook_cb cb = (fpool_worker_hook_cb)h->v[i].fn;
		int r = cb(w, h->v[i].arg);

		if (r == 0)
			continue;
		fpool_log(FPOOL_LOG_ERROR, "%s hook %zu of %zu failed (%d)",
			  what, i + 1, h->n, r);
		result = r;
		if (strict)
			break;
	}
	return result;
}

/*
 * Arm a timer that SIGKILLs this process once a stop has taken
 * graceful_timeout (plus a margin).  The master enforces the same deadline,
 * but a worker whose master died must bound itself.  A POSIX timer with
 * SIGKILL needs no handler and no cooperation from the loop.
 */
static void arm_deadline(struct fpool_worker *w)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL,
				.sigev_signo = SIGKILL };
	struct itimerspec its = { 0 };
	double t = w->graceful_timeout + ORPHAN_MARGIN;

	if (w->deadline_armed)
		return;
	if (timer_create(CLOCK_MONOTONIC, &sev, &w->deadline) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "timer_create for the stop deadline");
		return;
	}
	its.it_value.tv_sec = (time_t)t;
	its.it_value.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
	if (timer_settime(w->deadline, 0, &its, NULL) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "timer_settime for the stop deadline");
		timer_delete(w->deadline);
		return;
	}
	w->deadline_armed = true;
}

/* Remove the library's own events that would keep the loop alive. */
static void drop_library_events(struct fpool_worker *w)
{
	if (w->heartbeat_ev != NULL) {
		event_free(w->heartbeat_ev);
		w->heartbeat_ev = NULL;
	}
	if (w->chan_ev != NULL) {
		event_free(w->chan_ev);
		w->chan_ev = NULL;
	}
}

void fpool_worker_stop(struct fpool_worker *w)
{
	if (w->stopping || w->interrupted)
		return;
	w->stopping = true;
	arm_deadline(w);
	drop_library_events(w);
	run_hooks(w, &w->on_stop, "on_stop", false);
	/* Leave event_base_dispatch() so that fpool_worker_loop() can go on
	 * in drain mode, where it ends once the worker's own events are
	 * gone. */
	event_base_loopbreak(w->base);
}

static void worker_interrupt(struct fpool_worker *w)
{
	w->interrupted = true;
	arm_deadline(w);
	drop_library_events(w);
	event_base_loopbreak(w->base);
}

static void worker_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct fpool_worker *w = arg;

	(void)what;
	if (sig == SIGINT)
		worker_interrupt(w);
	else
		fpool_worker_stop(w);
}

static void master_gone(struct fpool_worker *w, const char *why)
{
	fpool_log(FPOOL_LOG_WARNING, "master pid %d is gone (%s); stopping",
		  (int)w->master_pid, why);
	fpool_worker_stop(w);
}

/* Packets of the channel read per callback, so that a master sending
 * without pause cannot starve the worker's own events. */
#define CHAN_BATCH 64

int fpool_worker_on_message(struct fpool_worker *w, fpool_worker_message_cb cb,
			    void *arg)
{
	w->message_cb = cb;
	w->message_arg = arg;
	return 0;
}

int fpool_worker_send(struct fpool_worker *w, const void *data, size_t len)
{
	if (len > 0 && data == NULL)
		return -EINVAL;
	return fpool__message_send(w->chan, data, len);
}

/* What the master sends: messages (FPOOL_CHAN_MESSAGE packets), handed
 * to the callback in order; and EOF, which means the master died
 * (PR_SET_PDEATHSIG tells the same, by SIGTERM). */
static void worker_chan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_worker *w = arg;
	ssize_t n;

	(void)what;
	if (w->rbuf == NULL &&
	    (w->rbuf = malloc(FPOOL_MESSAGE_MAX + 2)) == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "out of memory for the master's "
					   "messages; reading them later");
		return;
	}
	for (int i = 0; i < CHAN_BATCH; i++) {
		n = recv(fd, w->rbuf, FPOOL_MESSAGE_MAX + 2, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			master_gone(w, n == 0 ? "channel closed"
					      : strerror(errno));
			return;
		}
		if (w->rbuf[0] != FPOOL_CHAN_MESSAGE ||
		    (size_t)n > FPOOL_MESSAGE_MAX + 1)
			continue; /* nothing else comes this way */
		if (w->message_cb != NULL)
			w->message_cb(w, w->rbuf + 1, (size_t)n - 1,
				      w->message_arg);
		/* The callback may have stopped the worker: no more. */
		if (w->chan_ev == NULL)
			return;
	}
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_worker *w = arg;
	struct fpool__msg m = { .type = FPOOL_MSG_HEARTBEAT,
				.requests = w->requests };
	int r;

	(void)fd;
	(void)what;
	/* Heartbeats never block: a busy master skips one, no harm done. */
	r = fpool__msg_send(w->chan, &m, false);
	if (r == -EPIPE || r == -ECONNRESET)
		master_gone(w, "channel closed");
	else if (r != 0 && r != -EAGAIN)
		fpool__log_errno(FPOOL_LOG_WARNING, -r, "sending heartbeat");
}

int fpool_worker_unref(struct fpool_worker *w, struct event *ev)
{
	struct unref_entry *e;

	if (ev == NULL || event_get_base(ev) != w->base)
		return -EINVAL;
	for (size_t i = 0; i < w->nunref; i++)
		if (w->unref[i].ev == ev) {
			/* Idempotent, as uv_unref(); the callback may have
			 * been changed (event_assign) since. */
			w->unref[i].cb = event_get_callback(ev);
			w->unref[i].arg = event_get_callback_arg(ev);
			return 0;
		}
	if (w->nunref == w->unref_cap) {
		size_t cap = w->unref_cap ? 2 * w->unref_cap : 8;

		e = realloc(w->unref, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		w->unref = e;
		w->unref_cap = cap;
	}
	e = &w->unref[w->nunref++];
	e->ev = ev;
	e->cb = event_get_callback(ev);
	e->arg = event_get_callback_arg(ev);
	return 0;
}

int fpool_worker_ref(struct fpool_worker *w, struct event *ev)
{
	for (size_t i = 0; i < w->nunref; i++)
		if (w->unref[i].ev == ev) {
			w->unref[i] = w->unref[--w->nunref];
			return 0;
		}
	return 0;
}

static bool is_unref(const struct fpool_worker *w, const struct event *ev)
{
	for (size_t i = 0; i < w->nunref; i++)
		if (w->unref[i].ev == ev &&
		    w->unref[i].cb == event_get_callback(ev) &&
		    w->unref[i].arg == event_get_callback_arg(ev))
			return true;
	return false;
}

/* event_base_foreach_event(): count the unref'd events that are in the
 * base now.  The walk visits only live events (libevent's own too), so
 * no stale entry of w->unref is dereferenced. */
static int count_unref(const struct event_base *base, const struct event *ev,
		       void *arg)
{
	struct fpool_worker *w = arg;

	(void)base;
	if (is_unref(w, ev))
		w->unref_live++;
	return 0;
}

static int worker_has_own_events(struct fpool_worker *w)
{
	int added = event_base_get_num_events(w->base, EVENT_BASE_COUNT_ADDED);

	/* An active callback runs in the next loop turn, which then does
	 * not block. */
	if (event_base_get_num_events(w->base, EVENT_BASE_COUNT_ACTIVE) > 0)
		return 1;
	/* ADDED counts each added event once, libevent's own not.  More
	 * than the library's and all unref'd ones together: one holds the
	 * drain, no need to look (no walk over every connection's event at
	 * each loop turn of a busy drain). */
	if (added > w->lib_events + (int)w->nunref)
		return 1;
	if (w->nunref == 0)
		return added > w->lib_events;
	w->unref_live = 0;
	(void)event_base_foreach_event(w->base, count_unref, w);
	return added > w->lib_events + w->unref_live;
}

int fpool_worker_loop(struct fpool_worker *w)
{
	/* Until stopped, the library's own events keep the loop alive, so
	 * dispatch returns only through loopbreak (stop or interrupt). */
	if (!w->stopping && !w->interrupted) {
		if (event_base_dispatch(w->base) < 0)
			return -EIO;
		if (!w->stopping)
			return 0; /* the worker broke its own loop */
	}
	/* Drain: serve in-flight work until the worker's events are gone. */
	while (w->stopping && !w->interrupted && worker_has_own_events(w))
		if (event_base_loop(w->base, EVLOOP_ONCE) < 0)
			return -EIO;
	return 0;
}

int fpool_worker_is_running(struct fpool_worker *w)
{
	if (!w->stopping && !w->interrupted &&
	    event_base_loop(w->base, EVLOOP_NONBLOCK) < 0)
		fpool_log(FPOOL_LOG_ERROR, "worker loop turn failed");
	return !w->stopping && !w->interrupted;
}

/* Step 2: the worker's own loop. */
static void build_loop(struct fpool_worker *w)
{
	struct timeval hb = fpool__tv(w->heartbeat_interval);

	w->base = event_base_new();
	if (w->base == NULL)
		fpool__child_fail("event_base_new failed");
	w->sigterm_ev = evsignal_new(w->base, SIGTERM, worker_signal_cb, w);
	w->sigint_ev = evsignal_new(w->base, SIGINT, worker_signal_cb, w);
	w->chan_ev = event_new(w->base, w->chan, EV_READ | EV_PERSIST,
			       worker_chan_cb, w);
	w->heartbeat_ev = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, w);
	if (w->sigterm_ev == NULL || w->sigint_ev == NULL ||
	    w->chan_ev == NULL || w->heartbeat_ev == NULL ||
	    evsignal_add(w->sigterm_ev, NULL) != 0 ||
	    evsignal_add(w->sigint_ev, NULL) != 0 ||
	    event_add(w->chan_ev, NULL) != 0 ||
	    event_add(w->heartbeat_ev, &hb) != 0)
		fpool__child_fail("cannot set up the worker's events");
	w->lib_events = 2; /* the two signal events stay to the end */
}

static void free_worker(struct fpool_worker *w)
{
	drop_library_events(w);
	if (w->sigterm_ev != NULL)
		event_free(w->sigterm_ev);
	if (w->sigint_ev != NULL)
		event_free(w->sigint_ev);
	if (w->base != NULL)
		event_base_free(w->base);
	if (w->deadline_armed)
		timer_delete(w->deadline);
	fpool__hooks_free(&w->on_start);
	fpool__hooks_free(&w->on_stop);
	fpool__hooks_free(&w->on_shutdown);
	free(w->unref);
	free(w->rbuf);
	free(w->listeners);
	close(w->chan);
	if (w->shm_page != NULL && munmap(w->shm_page, fpool__page_size()) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of the activity page");
}

void fpool__worker_run(const struct fpool__spawn *sp)
{
	struct fpool_worker w = { 0 };
	const struct fpool_worker_def *def = sp->def;
	struct fpool__msg ready = { .type = FPOOL_MSG_READY };
	sigset_t mask = sp->mask;
	int status, r;

	/* Output the master buffered but did not flush is the master's to
	 * write, not ours. */
	__fpurge(stdout);
	__fpurge(stderr);
	w.id = sp->id;
	w.pid = getpid();
	w.master_pid = sp->master_pid;
	w.chan = sp->chan;
	w.def = def;
	w.argc = sp->argc;
	w.argv = sp->argv;
	w.graceful_timeout = sp->graceful_timeout;
	w.heartbeat_interval = sp->heartbeat_interval;
	/* From here on, records go to the master over the channel. */
	fpool__log_set_worker(w.chan, w.id);
	w.shm = sp->activity;
	w.shm_page = fpool__child_keep_activity(sp);
	if (w.shm_page == NULL)
		w.shm = NULL;
	w.max_requests = sp->max_requests;

	/* stdout and stderr become the pipes the master reads. */
	if (dup2(sp->out, STDOUT_FILENO) < 0 ||
	    dup2(sp->err, STDERR_FILENO) < 0)
		fpool__child_fail("dup2 of the output pipes failed");
	fpool__child_leave_terminal();
	w.listeners = fpool__child_forget(sp, &w.nlisteners);
	build_loop(&w);
	if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
		fpool__child_fail("sigprocmask");

	/* The spawn context's groups live in the master's state, which
	 * this process keeps (child.c). */
	if (sp->uid != (uid_t)-1 || sp->gid != (gid_t)-1) {
		fpool__child_drop(sp);
		fpool__child_die_with_master(sp->master_pid);
	}
	/* A worker module is loaded now, as the worker's user, by every
	 * worker: the file on disk at this fork.  It stays loaded until
	 * the process exits. */
	if (def == NULL) {
		char why[1024];
		void *handle;

		if (fpool__module_open(sp->module, &def, &handle, why,
				       sizeof(why)) != 0)
			fpool__child_fail(why);
		w.def = def;
	}

	/* Step 3: the definition's own hooks come first in each list. */
	if ((def->on_start &&
	     fpool_worker_on_start(&w, def->on_start, def->arg) != 0) ||
	    (def->on_stop &&
	     fpool_worker_on_stop(&w, def->on_stop, def->arg) != 0) ||
	    (def->on_shutdown &&
	     fpool_worker_on_shutdown(&w, def->on_shutdown, def->arg) != 0))
		fpool__child_fail("out of memory");
	if (def->setup != NULL && def->setup(&w, w.argc, w.argv) != 0)
		fpool__child_fail("the worker's setup failed");
	if (run_hooks(&w, &w.on_start, "on_start", true) != 0)
		fpool__child_fail("an on_start hook failed");

	/* Step 4. */
	if ((r = fpool__msg_send(w.chan, &ready, true)) != 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -r, "sending ready");
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
	status = def->main(&w, def->arg);
	if (status < 0 || status > 255) {
		fpool_log(FPOOL_LOG_ERROR, "main returned %d", status);
		status = 1;
	}

	/* Step 5.  Freeing the signal events restores SIG_DFL; a late
	 * SIGTERM must not kill a worker that is exiting cleanly anyway. */
	run_hooks(&w, &w.on_shutdown, "on_shutdown", false);
	sigfillset(&mask);
	sigprocmask(SIG_SETMASK, &mask, NULL);
	free_worker(&w);
	fpool__child_exit(status);
}
