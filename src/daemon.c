/*
 * Daemon mode and the pidfile.
 *
 * Daemonizing follows daemon(7): fork, setsid, fork again.  The original
 * process does not exit at once, as daemon(3) would: it waits on a pipe
 * until the daemon says whether the pool started, so `forkpool -D` in a
 * script or an init system reports a failed start (pidfile held, a bad
 * hook) through its exit status instead of 0 and a dead daemon.
 *
 * The pidfile is held with flock() for the master's whole life: a second
 * master with the same pidfile cannot take the lock and refuses to start,
 * while a file left by a master that died (the lock went with it) is
 * simply taken over; no pid in a file is ever trusted to be alive.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fpool-int.h"

/* Point fd `target` at /dev/null.  0 or -errno. */
static int devnull_onto(int target)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fd != target && dup2(fd, target) < 0) /* dup2 clears CLOEXEC */
		r = -errno;
	if (fd != target)
		close(fd);
	else if (fcntl(fd, F_SETFD, 0) < 0)
		r = -errno;
	return r;
}

/*
 * The master's signals may have libevent handlers that write into a
 * socketpair the daemon shares: a Ctrl-C meant for the waiting process
 * must not stop the daemon.  The processes that only wait or fork get the
 * default actions back (SIGCHLD's default ignores, as waiting needs).
 */
static void default_signals(void)
{
	int sig;

	/* Nobody to tell of a failure: the process only waits or forks. */
	(void)fpool__signals_default(&sig);
}

/* The original process: leave with the status the daemon reports. */
static void __attribute__((noreturn)) await_daemon(int rfd, pid_t child)
{
	unsigned char status = 1;
	ssize_t n;

	do
		n = read(rfd, &status, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1) /* the daemon died before it could say */
		status = 1;
	/* The intermediate process left long ago: reap it. */
	while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
		;
	_exit(status);
}

/* Tell the original process the start failed, from a process that has
 * not got far enough to be the daemon. */
static void __attribute__((noreturn)) give_up(int wfd)
{
	unsigned char status = 1;

	if (write(wfd, &status, 1) < 0) {
		/* The original process reads EOF: the same answer. */
	}
	_exit(1);
}

int fpool__daemonize(int *ready_fd)
{
	int p[2], r;
	pid_t pid;

	*ready_fd = -1;
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		fpool__log_errno(FPOOL_LOG_ERROR, -r,
				 "daemon: cannot create a pipe");
		return r;
	}
	/* Whatever stdio holds would be written twice, once per process. */
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		r = -errno;
		fpool__log_errno(FPOOL_LOG_ERROR, -r, "daemon: cannot fork");
		close(p[0]);
		close(p[1]);
		return r;
	}
	if (pid > 0) {
		default_signals();
		close(p[1]);
		await_daemon(p[0], pid);
	}

	/* The intermediate process: a new session, without a terminal. */
	close(p[0]);
	if (setsid() < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno,
				 "daemon: setsid failed");
		give_up(p[1]);
	}
	pid = fork();
	if (pid < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno, "daemon: cannot fork");
		give_up(p[1]);
	}
	if (pid > 0) {
		/* The daemon, no longer a session leader, is re-parented to
		 * init (or the nearest subreaper) once this one exits. */
		default_signals();
		_exit(0);
	}

	/* The daemon. */
	if (chdir("/") < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno, "daemon: chdir /");
		give_up(p[1]);
	}
	if ((r = devnull_onto(STDIN_FILENO)) < 0 ||
	    (r = devnull_onto(STDOUT_FILENO)) < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -r,
				 "daemon: cannot redirect stdio to /dev/null");
		give_up(p[1]);
	}
	*ready_fd = p[1];
	return 0;
}

void fpool__daemon_ready(int *ready_fd, int status)
{
	unsigned char b = (unsigned char)status;
	sigset_t pipe_set, old;
	struct timespec zero = { 0, 0 };
	ssize_t n;
	int r;

	if (*ready_fd < 0)
		return;
	/* A reader that was killed must not kill the daemon with SIGPIPE:
	 * block it around the write and consume the one it may raise. */
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigprocmask(SIG_BLOCK, &pipe_set, &old);
	do
		n = write(*ready_fd, &b, 1);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = errno;

		if (err == EPIPE)
			sigtimedwait(&pipe_set, NULL, &zero);
		else
			fpool__log_errno(FPOOL_LOG_WARNING, err,
					 "daemon: cannot report the start "
					 "to the starting process");
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(*ready_fd);
	*ready_fd = -1;
	/* Started: from now on nobody waits on our stderr.  After a failed
	 * start it stays, for the last words of the exiting daemon. */
	if (status == 0 && (r = devnull_onto(STDERR_FILENO)) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, -r,
				 "daemon: cannot redirect stderr to "
				 "/dev/null");
}

/*
 * Read the pid a holder wrote.  It may have locked the file and not yet
 * written it: look again for a short while before giving up (0).
 */
static pid_t read_holder(int fd)
{
	struct timespec pause = { 0, 2 * 1000 * 1000 }; /* 2 ms */
	char buf[32];

	for (int tries = 0; tries < 50; tries++) {
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		unsigned v;

		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			buf[n] = '\0';
			while (n > 0 &&
			       (buf[n - 1] == '\n' || buf[n - 1] == ' '))
				buf[--n] = '\0';
			if (fpool__parse_uint(buf, 1, INT32_MAX, &v) == 0)
				return (pid_t)v;
		}
		nanosleep(&pause, NULL);
	}
	return 0;
}

int fpool__pidfile_take(const char *path, int *fd, pid_t *holder)
{
	struct stat st;
	char buf[32];
	int f, n, r;

	*fd = -1;
	*holder = 0;
	/* O_NOFOLLOW: a symbolic link planted where the pidfile goes
	 * (another user's, in a shared directory) must not make a root
	 * master truncate what it points to.  ELOOP then. */
	f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY,
		 0644);
	if (f < 0)
		return -errno;
	if (fstat(f, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto fail;
	}
	while ((r = flock(f, LOCK_EX | LOCK_NB)) < 0 && errno == EINTR)
		;
	if (r < 0) {
		r = -errno;
		if (r == -EWOULDBLOCK) {
			*holder = read_holder(f);
			r = -EEXIST;
		}
		goto fail;
	}
	/* Ours now: whatever an earlier master left goes. */
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	errno = 0; /* a short pwrite() sets none */
	if (ftruncate(f, 0) < 0 || pwrite(f, buf, (size_t)n, 0) != n ||
	    fsync(f) < 0) {
		r = errno != 0 ? -errno : -EIO;
		goto fail;
	}
	*fd = f;
	return 0;
fail:
	close(f);
	return r;
}

void fpool__pidfile_remove(const char *path, int fd)
{
	if (fd < 0)
		return;
	/* Unlink while still holding the lock: a master starting now either
	 * fails on our lock or creates a new file, never shares ours. */
	if (unlink(path) < 0 && errno != ENOENT)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "cannot remove the pidfile %s", path);
	close(fd);
}
