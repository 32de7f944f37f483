/*
 * Worker modules: shared objects exporting FPOOL_WORKER_SYMBOL, a pointer
 * to their struct fpool_worker_def.
 *
 * By default the master never maps one (fpool_config.worker_module): each
 * new worker loads it after fork (worker.c), so a rolling reload runs the
 * file as it is on disk now.  The path is resolved (realpath) once per
 * generation -- at start and at each reload -- so a symbolic link flipped
 * half-way through a reload cannot give two slots different code.  Before
 * a generation starts, the module is loaded once in a throw-away child
 * (its constructors run there, never in the master) so that a missing
 * file, a file that is not a loadable object or a missing symbol refuses
 * the start or the reload instead of failing every worker.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpool-int.h"

int fpool__module_open(const char *path, const struct fpool_worker_def **def,
		       void **handle, char *err, size_t errlen)
{
	const struct fpool_worker_def *const *sym;
	const unsigned *abi;
	void *h;

	*def = NULL;
	*handle = NULL;
	/* RTLD_NOW: an unresolved symbol is an error here, not a crash in
	 * a worker later. */
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		/* dlerror() names the file. */
		snprintf(err, errlen, "cannot load the worker module: %s",
			 dlerror());
		return -ENOEXEC;
	}
	/* The stamp first: a module built for another ABI may not even
	 * have its definition where we would look for it. */
	abi = dlsym(h, FPOOL_WORKER_ABI_SYMBOL);
	if (abi == NULL || *abi != FPOOL_ABI_VERSION) {
		if (abi == NULL)
			snprintf(
				err, errlen,
				"%s is not a forkpool worker module of this "
				"version: no ABI stamp (symbol %s); rebuild it "
				"with FPOOL_WORKER_MODULE() of forkpool %s",
				path, FPOOL_WORKER_ABI_SYMBOL, FPOOL_VERSION);
		else
			snprintf(
				err, errlen,
				"%s was built for forkpool ABI %u, this is ABI "
				"%u (forkpool %s): rebuild it",
				path, *abi, FPOOL_ABI_VERSION, FPOOL_VERSION);
		dlclose(h);
		return -ENOEXEC;
	}
	sym = dlsym(h, FPOOL_WORKER_SYMBOL);
	if (sym == NULL || *sym == NULL || (*sym)->main == NULL) {
		snprintf(err, errlen, "%s is not a forkpool worker module: %s",
			 path,
			 sym == NULL ? "no symbol " FPOOL_WORKER_SYMBOL
				     : "its definition has no main");
		dlclose(h);
		return -ENOEXEC;
	}
	*def = *sym;
	*handle = h;
	return 0;
}

int fpool__module_resolve(const char *path, char **out, char *err,
			  size_t errlen)
{
	char *real = realpath(path, NULL);

	*out = NULL;
	if (real == NULL) {
		int e = errno;

		snprintf(err, errlen, "worker module %s: %s", path,
			 strerror(e));
		return -e;
	}
	*out = real;
	return 0;
}

/* The throw-away child: load the module as a worker would (as --user),
 * write why it cannot be used to fd, or nothing, and exit. */
static void check_child(const char *path, const struct fpool__account *acct,
			const char *user, int fd) __attribute__((noreturn));
static void check_child(const char *path, const struct fpool__account *acct,
			const char *user, int fd)
{
	const struct fpool_worker_def *def;
	char why[1024];
	void *h;
	int keep[4] = { STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, fd };

	int sig;

	/* The master's signal handlers would write into its own loop's
	 * signal pipe; this process keeps every signal blocked and the
	 * default dispositions, and dies with the master. */
	(void)fpool__signals_default(&sig);
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	fpool__close_other_fds(keep, 4);
	why[0] = '\0';
	if (acct->uid == (uid_t)-1 && acct->gid == (gid_t)-1) {
		(void)fpool__module_open(path, &def, &h, why, sizeof(why));
	} else if (fpool__account_switch(acct, user, why, sizeof(why)) == 0 &&
		   fpool__module_open(path, &def, &h, why, sizeof(why)) != 0) {
		/* The workers load it as their user: say so (a file under a
		 * directory only root can read is a common cause). */
		size_t n = strlen(why);

		snprintf(why + n, sizeof(why) - n,
			 " (loaded as the workers' user %s)",
			 user != NULL ? user : "(unchanged)");
	}
	if (why[0] != '\0' && write(fd, why, strlen(why)) < 0)
		_exit(2);
	_exit(why[0] != '\0');
}

/* Wait for the check child until `deadline`, then kill it.  Normally it
 * has already closed the pipe and is exiting: this returns at once. */
static int check_wait(pid_t pid, double deadline, int *status)
{
	bool killed = false;

	for (;;) {
		pid_t r = waitpid(pid, status, killed ? 0 : WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR) {
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "waitpid of the module check");
			return -errno;
		}
		if (r == 0 && fpool__now() >= deadline) {
			if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
				fpool__log_errno(FPOOL_LOG_WARNING, errno,
						 "killing the module check "
						 "pid %d",
						 (int)pid);
			killed = true;
		} else if (r == 0) {
			(void)poll(NULL, 0, 1);
		}
	}
}

int fpool__module_check(const char *path, const struct fpool__account *acct,
			const char *user, double timeout, char *err,
			size_t errlen)
{
	sigset_t all, old;
	int p[2], status, r = 0;
	size_t got = 0;
	double deadline = fpool__now() + timeout;
	pid_t pid;

	err[0] = '\0';
	if (pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot check worker module %s: pipe: %s",
			 path, strerror(-r));
		return r;
	}
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		check_child(path, acct, user, p[1]);
	}
	r = pid < 0 ? -errno : 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		snprintf(err, errlen, "cannot check worker module %s: fork: %s",
			 path, strerror(-r));
		return r;
	}
	/* Bounded: a module whose constructors hang is refused, and the
	 * master waits no longer than `timeout`. */
	for (;;) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		double left = deadline - fpool__now();
		ssize_t n;

		if (left <= 0) {
			snprintf(err, errlen,
				 "worker module %s did not load within %.3g s",
				 path, timeout);
			r = -ETIMEDOUT;
			got = strlen(err);
			break;
		}
		n = poll(&pfd, 1, (int)(left * 1e3) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			snprintf(err, errlen,
				 "cannot check worker module %s: poll: %s",
				 path, strerror(-r));
			got = strlen(err);
			break;
		}
		if (n == 0)
			continue;
		n = read(p[0], err + got, errlen - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "reading the module check's answer");
		if (n <= 0 || (got += (size_t)n) >= errlen - 1)
			break;
	}
	close(p[0]);
	err[got] = '\0';
	if (check_wait(pid, r != 0 ? 0 : deadline, &status) != 0)
		status = 0;
	if (r != 0)
		return r;
	if (err[0] != '\0')
		return -ENOEXEC;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char how[96];

		fpool__describe_status(status, how, sizeof(how));
		snprintf(err, errlen,
			 "worker module %s: loading it in a test process "
			 "failed (%s)",
			 path, how);
		return -ENOEXEC;
	}
	return 0;
}
