/*
 * Becoming a worker: what a freshly forked child does before it is one
 * (DESIGN.md, "Lifecycle", worker step 1, and "Fork safety"), from its
 * spawn context alone: leave the terminal, let go of the master's state,
 * reset signals, die with the master, keep only its own fds, and later
 * drop privileges.  worker.c runs the worker itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

void fpool__child_exit(int status)
{
	fflush(NULL);
	_exit(status);
}

void fpool__child_fail(const char *what)
{
	fpool_log(FPOOL_LOG_ERROR, "worker start failed: %s", what);
	fpool__child_exit(FPOOL_EXIT_START_FAILED);
}

/* Become --user/--group, with exactly the supplementary groups the
 * master resolved (never its own), or exit as a failed start: a worker
 * never runs with the master's privileges. */
void fpool__child_drop(const struct fpool__spawn *w)
{
	struct fpool__account a = { .uid = w->uid,
				    .gid = w->gid,
				    .groups = (gid_t *)w->groups,
				    .ngroups = w->ngroups };
	char why[200];

	if (fpool__account_switch(&a, w->user, why, sizeof(why)) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "%s", why);
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
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
void fpool__child_leave_terminal(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
		fpool__child_fail("cannot put /dev/null on stdin");
	close(fd);
	if (setpgid(0, 0) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "setpgid: the worker stays in the master's "
				 "process group");
	/* Only a process that has one can open /dev/tty (ENXIO otherwise). */
	fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd >= 0) {
		if (ioctl(fd, TIOCNOTTY) < 0)
			fpool__child_fail(
				"cannot leave the controlling terminal");
		close(fd);
	}
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Close every fd not in keep[] (sorted).  close_range() is Linux 5.9+;
 * without it, walk /proc/self/fd. */
void fpool__close_other_fds(int *keep, size_t n)
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
void fpool__child_die_with_master(pid_t master_pid)
{
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "prctl(PR_SET_PDEATHSIG)");
	if (getppid() != master_pid) {
		fpool_log(FPOOL_LOG_WARNING,
			  "the master died while this worker "
			  "started");
		fpool__child_exit(FPOOL_EXIT_START_FAILED);
	}
}

int fpool__child_listener(const struct fpool__spawn *sp, int fd)
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
		fpool__child_fail("cannot learn a listener's address");
	}
	if (ss.ss_family == AF_UNIX)
		return fd;
	err = fpool__reuseport_socket((struct sockaddr *)&ss, len, SOMAXCONN,
				      &own);
	if (err != 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot listen with SO_REUSEPORT");
		fpool__child_fail("no listener of its own");
	}
	return own;
}

/* The master's state as this child inherited it: never used, never
 * freed, only kept reachable (for leak checkers, it is not lost). */
static const void *abandoned;

/* Keep the page of the shared activity mapping that holds this worker's
 * entry, unmap the rest (the other workers' entries).  The page, to unmap
 * at the end, or NULL. */
void *fpool__child_keep_activity(const struct fpool__spawn *sp)
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
int *fpool__child_forget(const struct fpool__spawn *sp, size_t *nlisteners)
{
	int *listeners;
	size_t nl = 0;
	size_t nkeep = 4 + sp->nlisteners + sp->npreserved, k = 0;
	int r, sig = 0;
	int *keep = calloc(nkeep, sizeof(*keep));

	listeners = calloc(sp->nlisteners ? sp->nlisteners : 1, sizeof(int));
	if (keep == NULL || listeners == NULL)
		fpool__child_fail("out of memory");
	keep[k++] = STDIN_FILENO;
	keep[k++] = STDOUT_FILENO;
	keep[k++] = STDERR_FILENO;
	keep[k++] = sp->chan;
	for (size_t i = 0; i < sp->nlisteners; i++)
		keep[k++] = listeners[nl++] =
			fpool__child_listener(sp, sp->listeners[i]);
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

	fpool__child_die_with_master(sp->master_pid);
	fpool__close_other_fds(keep, k);
	free(keep);
	*nlisteners = nl;
	return listeners;
}
