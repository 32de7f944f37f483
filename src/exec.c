/*
 * -k exec, the child side: turn a freshly forked child into the program
 * every worker runs, handed what systemd hands a socket-activated
 * service (sd_listen_fds(3), sd_notify(3)): its listeners from fd 3 in
 * --bind order, LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES, NOTIFY_SOCKET (a
 * datagram socket of the master's, one address per process) and the
 * watchdog period.  It holds exactly fds 0, 1, 2 and its listeners, every
 * signal at its default and none blocked.  Whatever fails before the
 * program runs is written to the close-on-exec error pipe, whose EOF
 * tells the master that execve() succeeded (proc.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fpool-int.h"

extern char **environ;

/* Tell the master why the start failed, through the error pipe, and
 * leave as a failed start.  Only write(2): the pipe is all the master
 * reads of this process before it runs the program. */
static void __attribute__((noreturn, format(printf, 3, 4)))
exec_fail(int fd, int err, const char *fmt, ...)
{
	char buf[200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (err != 0)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, ": %s",
			      strerror(err));
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(fd, buf, (size_t)n) < 0) {
		/* Nothing else to tell it with: the exit status says it
		 * failed to start. */
	}
	_exit(FPOOL_EXIT_START_FAILED);
}

/* Remove every variable of the systemd contract the master inherited:
 * they describe the master's own activation, not this program's. */
static void forget_env(void)
{
	static const char *const names[] = {
		"NOTIFY_SOCKET",
		"WATCHDOG_USEC",
		"WATCHDOG_PID",
		"FORKPOOL_WORKER_ID",
	};
	bool again = true;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		unsetenv(names[i]);
	/* unsetenv() moves entries: start over after each removal. */
	while (again) {
		again = false;
		for (char **e = environ; e != NULL && *e != NULL; e++) {
			char name[256];
			size_t n = strcspn(*e, "=");

			if (strncmp(*e, "LISTEN_", 7) != 0 || n >= sizeof(name))
				continue;
			memcpy(name, *e, n);
			name[n] = '\0';
			unsetenv(name);
			again = true;
			break;
		}
	}
}

static void set_env(int efd, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_env(int efd, const char *name, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		exec_fail(efd, 0, "%s is too long", name);
	if (setenv(name, buf, 1) < 0)
		exec_fail(efd, errno, "setenv(%s)", name);
}

/*
 * Put listener i on fd 3 + i.  They are first moved above the targets
 * (F_DUPFD_CLOEXEC from 3 + n), so that no dup2() overwrites a listener
 * not yet moved; dup2() then clears FD_CLOEXEC on the target.  They are
 * put in blocking mode, systemd's default: O_NONBLOCK belongs to the
 * shared open file description, but every exec'd worker wants the same.
 */
static void place_listeners(const struct fpool__spawn *sp, int *efd)
{
	int n = (int)sp->nlisteners;
	int tmp[n > 0 ? n : 1];

	*efd = fcntl(*efd, F_DUPFD_CLOEXEC, 3 + n);
	if (*efd < 0)
		_exit(FPOOL_EXIT_START_FAILED);
	for (int i = 0; i < n; i++) {
		int fd = fpool__child_listener(sp, sp->listeners[i]);

		tmp[i] = fcntl(fd, F_DUPFD_CLOEXEC, 3 + n);
		if (tmp[i] < 0)
			exec_fail(*efd, errno, "fcntl(F_DUPFD) of a listener");
	}
	for (int i = 0; i < n; i++) {
		int fl;

		if (dup2(tmp[i], 3 + i) < 0)
			exec_fail(*efd, errno, "dup2 of a listener to fd %d",
				  3 + i);
		close(tmp[i]);
		fl = fcntl(3 + i, F_GETFL);
		if (fl < 0 || fcntl(3 + i, F_SETFL, fl & ~O_NONBLOCK) < 0)
			exec_fail(*efd, errno, "making listener %d blocking",
				  i);
	}
}

void fpool__exec_run(const struct fpool__spawn *sp)
{
	int efd = sp->exec_err;
	int keep[4 + sp->nlisteners];
	size_t k = 0;
	sigset_t none;
	int sig, r;

	__fpurge(stdout);
	__fpurge(stderr);
	/* The master's log is not ours: a record logged here (a failed
	 * privilege drop) goes to stderr, which the master captures. */
	fpool__log_child();
	if (dup2(sp->out, STDOUT_FILENO) < 0 ||
	    dup2(sp->err, STDERR_FILENO) < 0)
		exec_fail(efd, errno, "dup2 of the output pipes");
	fpool__child_leave_terminal();
	place_listeners(sp, &efd);
	keep[k++] = STDIN_FILENO;
	keep[k++] = STDOUT_FILENO;
	keep[k++] = STDERR_FILENO;
	keep[k++] = efd;
	for (size_t i = 0; i < sp->nlisteners; i++)
		keep[k++] = 3 + (int)i;
	fpool__close_other_fds(keep, k);

	/* Every disposition back to its default (a handler would be gone
	 * with execve() anyway, but SIG_IGN would stay), then no signal
	 * blocked: the program must not inherit the master's choices. */
	r = fpool__signals_default(&sig);
	if (r < 0)
		exec_fail(efd, -r, "cannot reset the disposition of %s",
			  strsignal(sig));

	if (sp->uid != (uid_t)-1 || sp->gid != (gid_t)-1)
		fpool__child_drop(sp);
	/* PR_SET_PDEATHSIG survives execve() (but not a set-user-ID
	 * program, prctl(2)); set after the drop, which clears it. */
	fpool__child_die_with_master(sp->master_pid);

	forget_env();
	set_env(efd, "LISTEN_FDS", "%zu", sp->nlisteners);
	set_env(efd, "LISTEN_PID", "%d", (int)getpid());
	set_env(efd, "LISTEN_FDNAMES", "%s",
		sp->listen_names != NULL ? sp->listen_names : "");
	set_env(efd, "FORKPOOL_WORKER_ID", "%u", sp->id);
	if (sp->exec_notify && sp->notify_addr != NULL) {
		set_env(efd, "NOTIFY_SOCKET", "%s", sp->notify_addr);
		set_env(efd, "WATCHDOG_USEC", "%llu",
			(unsigned long long)(sp->worker_timeout * 1e6));
		set_env(efd, "WATCHDOG_PID", "%d", (int)getpid());
	}

	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		exec_fail(efd, errno, "sigprocmask");
	fflush(NULL);
	execvp(sp->argv[0], sp->argv);
	exec_fail(efd, errno, "cannot exec %s", sp->argv[0]);
}

/* As execvp(3) searches: a name with a slash is taken as it is; else
 * each PATH entry (an empty one is the current directory). */
int fpool__exec_resolve(const char *prog, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	int err = -ENOENT;

	if (prog == NULL || prog[0] == '\0')
		return -ENOENT;
	if (strchr(prog, '/') != NULL) {
		struct stat st;

		if (stat(prog, &st) < 0)
			return -errno;
		if (!S_ISREG(st.st_mode) || access(prog, X_OK) < 0)
			return -EACCES;
		snprintf(buf, len, "%s", prog);
		return 0;
	}
	if (path == NULL)
		path = "/bin:/usr/bin";
	for (;;) {
		size_t n = strcspn(path, ":");
		struct stat st;

		if ((size_t)snprintf(buf, len, "%.*s%s%s", (int)n, path,
				     n > 0 ? "/" : "", prog) < len &&
		    stat(buf, &st) == 0 && S_ISREG(st.st_mode)) {
			if (access(buf, X_OK) == 0)
				return 0;
			err = -EACCES;
		}
		path += n;
		if (*path == '\0')
			break;
		path++;
	}
	return err;
}
