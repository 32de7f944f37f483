/*
 * The child side: what a freshly forked worker does, in DESIGN.md's order.
 *
 *  1. Drop the master's state: re-initialise the inherited event_base (its
 *     epoll instance is shared with the master) and free it, reset the
 *     master's signals to SIG_DFL, ask for SIGTERM when the master dies,
 *     close every fd but stdio, the channel, listeners and preserved fds.
 *  2. Build a fresh loop with SIGTERM/SIGINT events, then unblock signals.
 *  3. setup, then on_start hooks; a failure exits FPOOL_EXIT_START_FAILED.
 *  4. Tell the master "ready", start the heartbeat, run main.
 *  5. on_shutdown hooks, free everything, exit with main's status.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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
	uid_t uid;		   /* drop to these before on_start; */
	gid_t gid;		   /* (uid_t)-1: keep */
	gid_t *groups;		   /* supplementary groups to set with gid */
	size_t ngroups;
	const char *user; /* for messages */
};

void fpool__child_exit(int status)
{
	fflush(NULL);
	_exit(status);
}

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

static void worker_fail(const char *what)
{
	fpool_log(FPOOL_LOG_ERROR, "worker start failed: %s", what);
	fpool__child_exit(FPOOL_EXIT_START_FAILED);
}

/* Become --user/--group, with exactly the supplementary groups the
 * master resolved (never its own).  Checked: a worker that cannot drop,
 * or could get back, exits rather than run with the master's
 * privileges. */
static void drop_privileges(struct fpool_worker *w)
{
	gid_t *have = calloc(w->ngroups + 1, sizeof(*have));
	int n;

	if (have == NULL)
		worker_fail("out of memory");

	if (w->gid != (gid_t)-1 &&
	    (setgroups(w->ngroups, w->groups) < 0 || setgid(w->gid) < 0)) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno,
				 "cannot switch to group %u", (unsigned)w->gid);
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
	if (w->uid != (uid_t)-1 && setuid(w->uid) < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno,
				 "cannot switch to user %s (uid %u)", w->user,
				 (unsigned)w->uid);
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
	/* Make sure there is no way back: real, effective and saved ids
	 * are the new ones, the groups are those asked for, and setuid(0)
	 * fails. */
	n = getgroups((int)w->ngroups + 1, have);
	if ((w->gid != (gid_t)-1 &&
	     (getgid() != w->gid || getegid() != w->gid ||
	      n != (int)w->ngroups ||
	      memcmp(have, w->groups, (size_t)n * sizeof(*have)) != 0)) ||
	    (w->uid != (uid_t)-1 &&
	     (getuid() != w->uid || geteuid() != w->uid ||
	      (w->uid != 0 && setuid(0) == 0)))) {
		fpool_log(FPOOL_LOG_ERROR,
			  "privileges still held after switching to user %s "
			  "group %u; refusing to run",
			  w->user ? w->user : "(unchanged)", (unsigned)w->gid);
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
	free(have);
}

/*
 * A worker gets no terminal: stdin is /dev/null, and it leaves the
 * master's controlling terminal (TIOCNOTTY) and foreground process group
 * (a group of its own, in the master's session).  Otherwise a worker
 * dropped to --user, run in the foreground of root's shell, could read
 * that terminal or push input into it (TIOCSTI: `id > file` ran as
 * root); and Ctrl-C, Ctrl-\ or Ctrl-Z would reach the workers behind the
 * master's back: now the master alone gets them and decides (SIGINT is
 * passed on; QUIT stops the pool gracefully; TSTP is ignored).  It stays
 * in the master's session, so a supervisor that kills the session (or
 * the cgroup) still finds it.  setsid() would do too, but would hide the
 * workers from their session.
 */
static void leave_terminal(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
		worker_fail("cannot put /dev/null on stdin");
	close(fd);
	if (setpgid(0, 0) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "setpgid: the worker stays in the master's "
				 "process group");
	/* Only a process that has one can open /dev/tty (ENXIO otherwise). */
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		if (ioctl(fd, TIOCNOTTY) < 0)
			worker_fail("cannot leave the controlling terminal");
		close(fd);
	}
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

static void worker_chan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_worker *w = arg;
	char buf[256];
	ssize_t n;

	(void)what;
	/* The master sends nothing yet; what matters is EOF, which means
	 * the master died (PR_SET_PDEATHSIG tells the same, by SIGTERM). */
	n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n == 0)
		master_gone(w, "channel closed");
	else if (n < 0 && errno != EAGAIN && errno != EINTR)
		master_gone(w, strerror(errno));
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

static int worker_has_own_events(struct fpool_worker *w)
{
	return event_base_get_num_events(w->base, EVENT_BASE_COUNT_ADDED) >
		       w->lib_events ||
	       event_base_get_num_events(w->base, EVENT_BASE_COUNT_ACTIVE) > 0;
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

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Close every fd not in keep[] (sorted).  close_range() is Linux 5.9+;
 * without it, walk /proc/self/fd. */
static void close_other_fds(int *keep, size_t n)
{
	unsigned lo = 0;
	DIR *d;
	struct dirent *e;

	qsort(keep, n, sizeof(*keep), cmp_int);
	for (size_t i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)keep[i] : ~0U;

		if (hi > lo && close_range(lo, hi - 1, 0) < 0)
			goto fallback;
		if (i < n)
			lo = (unsigned)keep[i] + 1;
	}
	return;
fallback:
	d = opendir("/proc/self/fd");
	if (d == NULL) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "close_range and /proc/self/fd both failed; "
				 "inherited fds stay open");
		return;
	}
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);

		if (e->d_name[0] == '.' || fd == dirfd(d) ||
		    bsearch(&fd, keep, n, sizeof(*keep), cmp_int) != NULL)
			continue;
		close(fd);
	}
	closedir(d);
}

/* Get SIGTERM when the master dies; then check it did not die already,
 * before the prctl took effect (we would have been re-parented).  The
 * kernel clears the setting when credentials change (prctl(2)), so this
 * runs again after a privilege drop. */
static void die_with_master(struct fpool_worker *w)
{
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "prctl(PR_SET_PDEATHSIG)");
	if (getppid() != w->master_pid) {
		fpool_log(FPOOL_LOG_WARNING,
			  "the master died while this worker "
			  "started");
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
}

/* The listener this worker serves for the master's socket fd: that very
 * socket, or with --reuse-port a socket of its own on the same address. */
static int own_listener(const struct fpool__spawn *sp, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int own, err;

	int listening = 0;
	socklen_t ll = sizeof(listening);

	/* Only a socket the master reserved without listening (reuseport.c)
	 * is replaced; one passed in listening (socket activation) is
	 * shared as usual. */
	if (!sp->reuse_port ||
	    (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 &&
	     listening))
		return fd;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno, "getsockname");
		worker_fail("cannot learn a listener's address");
	}
	if (ss.ss_family == AF_UNIX)
		return fd;
	err = fpool__reuseport_socket((struct sockaddr *)&ss, len, SOMAXCONN,
				      &own);
	if (err != 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot listen with SO_REUSEPORT");
		worker_fail("no listener of its own");
	}
	return own;
}

/* The master's state as this child inherited it: never used, never
 * freed, only kept reachable (for leak checkers, it is not lost). */
static const void *abandoned;

/* Keep the page of the shared activity mapping that holds this worker's
 * entry, unmap the rest (the other workers' entries).  The page, to unmap
 * at the end, or NULL. */
static void *keep_activity_page(const struct fpool__spawn *sp)
{
	size_t page = fpool__page_size();
	char *base = sp->shm, *end, *keep;

	if (base == NULL || sp->activity == NULL)
		return NULL;
	end = base + sp->shm_len;
	keep = base + ((char *)sp->activity - base) / page * page;
	if (keep > base && munmap(base, (size_t)(keep - base)) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of other workers' activity");
	if (keep + page < end &&
	    munmap(keep + page, (size_t)(end - keep - page)) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of other workers' activity");
	return keep;
}

/*
 * Step 1: leave nothing of the master in this process but what it keeps.
 * The master's state is left as it is: undoing it (an event_reinit() of
 * its loop, which re-registers every fd it watches, then freeing it all)
 * cost each fork time in proportion to the pool -- 1024 workers took 9 s
 * to start and 27 s to reload.  What must not happen is the deletion of
 * an fd event of the master's loop: its epoll instance is still the
 * master's own (shared since fork()), and epoll_ctl(DEL) would
 * unregister the master's fd.  The events the spawn context lists are
 * signal and timer events, which touch no epoll instance; the signal
 * events must go, so that this worker's own loop can take the signals.
 */
static void forget_master(struct fpool_worker *w, const struct fpool__spawn *sp)
{
	size_t nkeep = 4 + sp->nlisteners + sp->npreserved, k = 0;
	int r, sig = 0;
	int *keep = calloc(nkeep, sizeof(*keep));

	w->listeners = calloc(sp->nlisteners ? sp->nlisteners : 1, sizeof(int));
	if (keep == NULL || w->listeners == NULL)
		worker_fail("out of memory");
	keep[k++] = STDIN_FILENO;
	keep[k++] = STDOUT_FILENO;
	keep[k++] = STDERR_FILENO;
	keep[k++] = w->chan;
	for (size_t i = 0; i < sp->nlisteners; i++)
		keep[k++] = w->listeners[w->nlisteners++] =
			own_listener(sp, sp->listeners[i]);
	for (size_t i = 0; i < sp->npreserved; i++)
		keep[k++] = sp->preserved[i];

	for (size_t i = 0; i < sp->nforget; i++)
		event_free(sp->forget[i]);
	abandoned = sp->keep;
	fpool__log_child();
	/* A worker never speaks for the master to systemd, nor does what
	 * it execs. */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");

	/* The master ignores or handles many signals; a worker starts
	 * from the defaults. */
	if ((r = fpool__signals_default(&sig)) != 0)
		fpool__log_errno(FPOOL_LOG_WARNING, -r, "resetting %s",
				 fpool__signame(sig));
	/* A worker writing to a closed connection must get EPIPE. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "ignoring SIGPIPE");

	die_with_master(w);
	close_other_fds(keep, k);
	free(keep);
}

/* Step 2: the worker's own loop. */
static void build_loop(struct fpool_worker *w)
{
	struct timeval hb = fpool__tv(w->heartbeat_interval);

	w->base = event_base_new();
	if (w->base == NULL)
		worker_fail("event_base_new failed");
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
		worker_fail("cannot set up the worker's events");
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
	free(w->listeners);
	free(w->groups);
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
	w.uid = sp->uid;
	w.gid = sp->gid;
	w.user = sp->user;
	if (sp->ngroups > 0) {
		w.groups = malloc(sp->ngroups * sizeof(*w.groups));
		if (w.groups == NULL)
			worker_fail("out of memory");
		memcpy(w.groups, sp->groups, sp->ngroups * sizeof(*w.groups));
		w.ngroups = sp->ngroups;
	}
	w.shm = sp->activity;
	w.shm_page = keep_activity_page(sp);
	if (w.shm_page == NULL)
		w.shm = NULL;
	w.max_requests = sp->max_requests;

	/* stdout and stderr become the pipes the master reads. */
	if (dup2(sp->out, STDOUT_FILENO) < 0 ||
	    dup2(sp->err, STDERR_FILENO) < 0)
		worker_fail("dup2 of the output pipes failed");
	leave_terminal();
	forget_master(&w, sp);
	build_loop(&w);
	if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
		worker_fail("sigprocmask");

	if (w.uid != (uid_t)-1 || w.gid != (gid_t)-1) {
		drop_privileges(&w);
		die_with_master(&w);
	}

	/* Step 3: the definition's own hooks come first in each list. */
	if ((def->on_start &&
	     fpool_worker_on_start(&w, def->on_start, def->arg) != 0) ||
	    (def->on_stop &&
	     fpool_worker_on_stop(&w, def->on_stop, def->arg) != 0) ||
	    (def->on_shutdown &&
	     fpool_worker_on_shutdown(&w, def->on_shutdown, def->arg) != 0))
		worker_fail("out of memory");
	if (def->setup != NULL && def->setup(&w, w.argc, w.argv) != 0)
		worker_fail("the worker's setup failed");
	if (run_hooks(&w, &w.on_start, "on_start", true) != 0)
		worker_fail("an on_start hook failed");

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
