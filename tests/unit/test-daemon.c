/*
 * Unit tests of daemon.c: the pidfile (taken, held by another process,
 * stale, removed) and daemonizing (the original process leaves with the
 * status the daemon reports; the daemon is detached).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fpool-int.h"
#include "unit.h"

static int setup(void **state)
{
	return tmp_setup_named(state, "forkpool.pid");
}

static void read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, len - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void assert_holds_pid(const char *path, pid_t pid)
{
	char buf[64], want[32];

	read_file(path, buf, sizeof(buf));
	snprintf(want, sizeof(want), "%d\n", (int)pid);
	assert_string_equal(buf, want);
}

static void test_pidfile_taken(void **state)
{
	struct tmp *t = *state;
	struct stat st;
	pid_t holder = -1;
	int fd = -1;
	mode_t mask = umask(0);

	umask(mask);
	assert_int_equal(fpool__pidfile_take(t->path, &fd, &holder), 0);
	assert_true(fd >= 0);
	assert_int_equal(holder, 0);
	assert_holds_pid(t->path, getpid());
	assert_int_equal(stat(t->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644 & ~mask);
	/* The lock is held: another open file description cannot take it. */
	{
		int other = open(t->path, O_RDWR | O_CLOEXEC);

		assert_true(other >= 0);
		assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
		assert_int_equal(errno, EWOULDBLOCK);
		close(other);
	}
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	fpool__pidfile_remove(t->path, fd);
}

/* A forked child takes the pidfile and waits; the parent must fail with
 * -EEXIST and learn the child's pid. */
static void test_pidfile_held(void **state)
{
	struct tmp *t = *state;
	int ready[2], fd = -1, status;
	pid_t child, holder = -1;
	char c;

	assert_int_equal(pipe(ready), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		int cfd;
		pid_t h;

		close(ready[0]);
		if (fpool__pidfile_take(t->path, &cfd, &h) != 0)
			_exit(1);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause(); /* until SIGKILLed */
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);

	assert_int_equal(fpool__pidfile_take(t->path, &fd, &holder), -EEXIST);
	assert_int_equal(fd, -1);
	assert_int_equal(holder, child);
	/* The holder's file is untouched. */
	assert_holds_pid(t->path, child);

	/* Once the holder is gone, so is its lock: the file is taken over. */
	kill(child, SIGKILL);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_int_equal(fpool__pidfile_take(t->path, &fd, &holder), 0);
	assert_holds_pid(t->path, getpid());
	fpool__pidfile_remove(t->path, fd);
}

/* A file left by a dead master (longer than ours, no lock) is taken over
 * and rewritten whole. */
static void test_pidfile_stale(void **state)
{
	struct tmp *t = *state;
	pid_t holder = -1;
	int fd = -1;

	write_file(t->path, "2147483600\nleftover junk\n");
	assert_int_equal(fpool__pidfile_take(t->path, &fd, &holder), 0);
	assert_true(fd >= 0);
	assert_holds_pid(t->path, getpid());
	fpool__pidfile_remove(t->path, fd);
}

static void test_pidfile_removed(void **state)
{
	struct tmp *t = *state;
	pid_t holder;
	int fd = -1;

	assert_int_equal(fpool__pidfile_take(t->path, &fd, &holder), 0);
	fpool__pidfile_remove(t->path, fd);
	assert_int_equal(access(t->path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	/* The fd was closed. */
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	/* Without a held fd nothing is removed (not ours). */
	write_file(t->path, "1\n");
	fpool__pidfile_remove(t->path, -1);
	assert_int_equal(access(t->path, F_OK), 0);
}

static void test_pidfile_errors(void **state)
{
	struct tmp *t = *state;
	char path[256];
	pid_t holder;
	int fd = 7;

	snprintf(path, sizeof(path), "%s/no/such/dir/x.pid", t->dir);
	assert_int_equal(fpool__pidfile_take(path, &fd, &holder), -ENOENT);
	assert_int_equal(fd, -1);
	/* A directory is no pidfile. */
	assert_true(fpool__pidfile_take(t->dir, &fd, &holder) < 0);
	assert_int_equal(fd, -1);
}

/* What a daemon's fd 2 is: /dev/null, the pipe the test gave the
 * original process as its stderr, or something else. */
enum err_fd { ERR_DEVNULL, ERR_TEST_PIPE, ERR_OTHER };

/* What a daemon tells the test about itself over `info`. */
struct daemon_info {
	pid_t pid, ppid, sid, pgrp;
	int cwd_root;		   /* getcwd() is "/" */
	int stdin_null;		   /* fd 0 is /dev/null */
	int stdout_null;	   /* fd 1 is /dev/null */
	enum err_fd stderr_before; /* fd 2 before ready */
	enum err_fd stderr_after;  /* fd 2 after ready (if reported) */
	int ready_cloexec;
	int ready_closed; /* the ready fd is closed (-1) after reporting */
};

static int is_devnull(int fd)
{
	struct stat a, b;

	return fstat(fd, &a) == 0 && stat("/dev/null", &b) == 0 &&
	       S_ISCHR(a.st_mode) && a.st_rdev == b.st_rdev;
}

static enum err_fd what_is_fd2(const struct stat *test_pipe)
{
	struct stat st;

	if (is_devnull(2))
		return ERR_DEVNULL;
	if (fstat(2, &st) == 0 && st.st_dev == test_pipe->st_dev &&
	    st.st_ino == test_pipe->st_ino)
		return ERR_TEST_PIPE;
	return ERR_OTHER;
}

/* Read fd until EOF into buf (NUL-terminated, cut to len - 1 bytes), for
 * at most 10 s. */
static void read_to_eof(int fd, char *buf, size_t len)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	size_t got = 0;
	char sink[256];
	ssize_t n;

	for (;;) {
		int r = poll(&pfd, 1, 10 * 1000);

		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			fail_msg("the daemon's stderr pipe never reached EOF");
		assert_true(r > 0);
		if (got < len - 1)
			n = read(fd, buf + got, len - 1 - got);
		else
			n = read(fd, sink, sizeof(sink));
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n >= 0);
		if (n == 0)
			break;
		if (got < len - 1)
			got += (size_t)n;
	}
	buf[got] = '\0';
}

#define BEFORE_READY "daemon: stderr before ready\n"
#define AFTER_READY  "daemon: stderr after ready\n"

/*
 * Fork an "original process" that daemonizes; its daemon reports `status`
 * (or, if status < 0, exits without reporting).  Returns the original's
 * exit status and fills *info from the daemon, and err with what reached
 * the stderr the original process was given: a pipe of the test's own, so
 * that what the daemon does with its stderr shows whatever stderr the test
 * runner gave us (under meson it may well be /dev/null already).  The
 * daemon writes BEFORE_READY to fd 2 before it reports, AFTER_READY after.
 */
static int run_daemonize(int status, struct daemon_info *info, char *err,
			 size_t errlen)
{
	int pipefd[2], errpipe[2], wstatus;
	struct stat test_pipe;
	pid_t orig;
	ssize_t n;

	assert_int_equal(pipe(pipefd), 0);
	assert_int_equal(pipe2(errpipe, O_CLOEXEC), 0);
	assert_int_equal(fstat(errpipe[1], &test_pipe), 0);
	orig = fork();
	assert_true(orig >= 0);
	if (orig == 0) {
		struct daemon_info di = { 0 };
		int ready = -1;
		char cwd[PATH_MAX];

		close(pipefd[0]);
		if (dup2(errpipe[1], STDERR_FILENO) < 0)
			_exit(97);
		if (fpool__daemonize(&ready) != 0)
			_exit(99);
		/* The daemon. */
		di.pid = getpid();
		di.ppid = getppid();
		di.sid = getsid(0);
		di.pgrp = getpgrp();
		di.cwd_root = getcwd(cwd, sizeof(cwd)) != NULL &&
			      strcmp(cwd, "/") == 0;
		di.stdin_null = is_devnull(0);
		di.stdout_null = is_devnull(1);
		di.stderr_before = what_is_fd2(&test_pipe);
		di.ready_cloexec = (fcntl(ready, F_GETFD) & FD_CLOEXEC) != 0;
		if (write(STDERR_FILENO, BEFORE_READY, strlen(BEFORE_READY)) <
		    0)
			_exit(96);
		if (status >= 0)
			fpool__daemon_ready(&ready, status);
		di.stderr_after = what_is_fd2(&test_pipe);
		if (write(STDERR_FILENO, AFTER_READY, strlen(AFTER_READY)) < 0)
			_exit(96);
		di.ready_closed = ready == -1;
		if (write(pipefd[1], &di, sizeof(di)) != sizeof(di))
			_exit(98);
		_exit(0);
	}
	close(pipefd[1]);
	close(errpipe[1]);
	assert_int_equal(waitpid(orig, &wstatus, 0), orig);
	do
		n = read(pipefd[0], info, sizeof(*info));
	while (n < 0 && errno == EINTR);
	assert_int_equal(n, sizeof(*info));
	close(pipefd[0]);
	/* EOF once the daemon has exited (or let go of the pipe). */
	read_to_eof(errpipe[0], err, errlen);
	close(errpipe[0]);
	assert_true(WIFEXITED(wstatus));
	return WEXITSTATUS(wstatus);
}

static void test_daemonize_started(void **state)
{
	struct daemon_info di;
	char err[512];

	(void)state;
	assert_int_equal(run_daemonize(0, &di, err, sizeof(err)), 0);
	assert_true(di.pid > 0);
	/* A new session whose leader (the intermediate) is gone: the daemon
	 * is not a session leader and can get no controlling terminal. */
	assert_true(di.sid != getsid(0));
	assert_true(di.sid != di.pid);
	assert_true(di.ready_cloexec);
	assert_true(di.cwd_root);
	assert_true(di.stdin_null);
	assert_true(di.stdout_null);
	/* stderr stays until the start is reported (what the daemon writes
	 * there reaches the starting process's stderr), then /dev/null. */
	assert_int_equal(di.stderr_before, ERR_TEST_PIPE);
	assert_int_equal(di.stderr_after, ERR_DEVNULL);
	assert_string_equal(err, BEFORE_READY);
	assert_true(di.ready_closed);
}

static void test_daemonize_failed(void **state)
{
	struct daemon_info di;
	char err[512];

	(void)state;
	assert_int_equal(run_daemonize(1, &di, err, sizeof(err)), 1);
	/* After a failed start stderr stays, for the daemon's last words. */
	assert_int_equal(di.stderr_before, ERR_TEST_PIPE);
	assert_int_equal(di.stderr_after, ERR_TEST_PIPE);
	assert_string_equal(err, BEFORE_READY AFTER_READY);
	assert_int_equal(run_daemonize(7, &di, err, sizeof(err)), 7);
}

/* A daemon that dies without a word makes the original exit 1. */
static void test_daemonize_silent(void **state)
{
	struct daemon_info di;
	char err[512];

	(void)state;
	assert_int_equal(run_daemonize(-1, &di, err, sizeof(err)), 1);
}

static void test_ready_noop(void **state)
{
	int fd = -1;

	(void)state;
	fpool__daemon_ready(&fd, 0);
	assert_int_equal(fd, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pidfile_taken, setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pidfile_held, setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pidfile_stale, setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pidfile_removed, setup,
						tmp_teardown),
		cmocka_unit_test_setup_teardown(test_pidfile_errors, setup,
						tmp_teardown),
		cmocka_unit_test(test_daemonize_started),
		cmocka_unit_test(test_daemonize_failed),
		cmocka_unit_test(test_daemonize_silent),
		cmocka_unit_test(test_ready_noop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
