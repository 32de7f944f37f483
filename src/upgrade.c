/*
 * Binary upgrade in place (SIGUSR2, `forkpool ctl upgrade`): the master
 * re-executes the binary now on disk and keeps its pid, as einhorn and
 * HAProxy's master-worker mode do (DESIGN.md, "Binary upgrade").
 *
 * In the running image:
 *  1. Pre-flight: the binary at the path resolved at start (not
 *     /proc/self/exe, which names the old inode) runs with `--check` and
 *     the original arguments, from the directory the master started in,
 *     its output in a pipe, bounded by FPOOL_UPGRADE_CHECK_TIMEOUT.  All
 *     of it on the loop: the master never waits for it.  Its failure is
 *     logged with its output, answered to `ctl upgrade`, and nothing else
 *     changes.
 *  2. Hand-over: the state (listeners, control socket and the waiting
 *     client, pidfile, the activity memfd, every slot and process with
 *     its fds and counters) goes into a memfd as versioned JSON; the fds
 *     it names lose FD_CLOEXEC (only they: the loop's epoll fd and signal
 *     socketpair stay close-on-exec); every signal is blocked; systemd
 *     hears RELOADING=1; execve() with the original arguments and
 *     environment plus FPOOL_UPGRADE_ENV naming the memfd.  Should
 *     execve() fail, all of it is undone and the pool goes on.
 *
 * The new image's side is adopt.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

extern char **environ;

/* ---- small helpers ------------------------------------------------------ */

struct fpool__upgrade *fpool__upgrade_get(struct fpool_pool *pool)
{
	if (pool->upgrade == NULL) {
		pool->upgrade = calloc(1, sizeof(*pool->upgrade));
		if (pool->upgrade != NULL)
			pool->upgrade->check_fd = -1;
	}
	return pool->upgrade;
}

int fpool__fd_cloexec(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0)
		return -errno;
	if (on == ((fl & FD_CLOEXEC) != 0))
		return 0;
	fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
	return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

pid_t fpool__parent_of(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;
	long ppid;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* The name is in parentheses and may hold anything: after the
	 * last ')' come the state and the parent. */
	p = strrchr(buf, ')');
	if (p == NULL || sscanf(p + 1, " %*c %ld", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

/* ---- the pre-flight check ------------------------------------------------ */

static void upgrade_done(struct fpool_pool *pool, const char *error,
			 const char *result);

/* The check's output, one line for the log and the answer: newlines
 * become "; " and the end is trimmed. */
static const char *check_output(struct fpool__upgrade *u)
{
	static char out[FPOOL_UPGRADE_CHECK_OUT + 32];
	size_t n = 0;

	for (size_t i = 0; i < u->check_len && n + 3 < FPOOL_UPGRADE_CHECK_OUT;
	     i++) {
		char c = u->check_out[i];

		if (c == '\n') {
			if (i + 1 < u->check_len) {
				out[n++] = ';';
				out[n++] = ' ';
			}
		} else {
			out[n++] = c;
		}
	}
	while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == ';'))
		n--;
	out[n] = '\0';
	if (u->check_cut)
		strcat(out, " [...]");
	return n > 0 ? out : "(no output)";
}

/* Read what the check wrote; at EOF stop watching.  `final`: it exited. */
static void check_read(struct fpool__upgrade *u, bool final)
{
	char buf[4096];

	while (u->check_fd >= 0) {
		ssize_t n = read(u->check_fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && !final)
			return;
		if (n <= 0) {
			/* EOF, or (exited) nothing more now: a process it
			 * left behind may hold the pipe; not waited for. */
			if (u->check_ev != NULL)
				event_free(u->check_ev);
			u->check_ev = NULL;
			close(u->check_fd);
			u->check_fd = -1;
			return;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (u->check_len < FPOOL_UPGRADE_CHECK_OUT - 1)
				u->check_out[u->check_len++] = buf[i];
			else
				u->check_cut = true;
		}
	}
}

static void check_read_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	check_read(arg, false);
}

static void check_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__upgrade *u = arg;

	(void)fd;
	(void)what;
	if (u->check_pid <= 0)
		return;
	/* Not yet reaped (only we reap it): the pid is still its own. */
	u->check_timed_out = true;
	if (kill(u->check_pid, SIGKILL) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "upgrade: killing the check, pid %d",
				 (int)u->check_pid);
}

static void check_free(struct fpool__upgrade *u)
{
	if (u->check_ev != NULL)
		event_free(u->check_ev);
	if (u->check_timer != NULL)
		event_free(u->check_timer);
	u->check_ev = u->check_timer = NULL;
	if (u->check_fd >= 0)
		close(u->check_fd);
	u->check_fd = -1;
}

/* An environment without `drop` (names ending in '='), plus `add` if not
 * NULL.  malloc'd array of the original strings; NULL when out of
 * memory. */
static char **env_copy(const char *const *drop, const char *add)
{
	size_t n = 0, k = 0;
	char **v;

	while (environ != NULL && environ[n] != NULL)
		n++;
	v = calloc(n + 2, sizeof(*v));
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool skip = false;

		for (const char *const *d = drop; *d != NULL && !skip; d++)
			skip = strncmp(environ[i], *d, strlen(*d)) == 0;
		if (!skip)
			v[k++] = environ[i];
	}
	if (add != NULL)
		v[k++] = (char *)add;
	return v;
}

/* Start `EXE --check ARGS...`.  0, or -errno (nothing left running). */
static int check_spawn(struct fpool_pool *pool, struct fpool__upgrade *u)
{
	/* It speaks for nobody: an older binary without --check would
	 * start a pool, which must not tell systemd it is the service. */
	static const char *const drop[] = { "NOTIFY_SOCKET=", "WATCHDOG_USEC=",
					    "WATCHDOG_PID=",
					    FPOOL_UPGRADE_ENV "=", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	struct timeval tv = fpool__tv(FPOOL_UPGRADE_CHECK_TIMEOUT);
	size_t argc = 0;
	char **argv = NULL, **envp = NULL;
	int p[2] = { -1, -1 }, err;
	pid_t pid;

	while (u->argv[argc] != NULL)
		argc++;
	argv = calloc(argc + 2, sizeof(*argv));
	envp = env_copy(drop, NULL);
	if (argv == NULL || envp == NULL) {
		err = -ENOMEM;
		goto out;
	}
	argv[0] = u->exe;
	argv[1] = (char *)"--check";
	for (size_t i = 1; i < argc; i++)
		argv[i + 1] = u->argv[i];
	if (pipe2(p, O_CLOEXEC) < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
		err = -errno;
		goto out;
	}
	/* Its own process group (terminal signals are the master's), the
	 * default dispositions and no signal blocked, stdin /dev/null,
	 * stdout and stderr the pipe, the directory the master started in
	 * (a relative --config must name the same file). */
	sigemptyset(&none);
	sigfillset(&dfl);
	sigdelset(&dfl, SIGKILL);
	sigdelset(&dfl, SIGSTOP);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
					      POSIX_SPAWN_SETSIGDEF |
					      POSIX_SPAWN_SETPGROUP);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dfl);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null",
					 O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
	if (u->cwd != NULL)
		posix_spawn_file_actions_addchdir_np(&fa, u->cwd);
	/* glibc reports a failed exec (ENOENT, EACCES, ENOEXEC...) here. */
	err = -posix_spawn(&pid, u->exe, &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	p[1] = -1;
	if (err != 0)
		goto out;
	u->check_pid = pid;
	u->check_fd = p[0];
	p[0] = -1;
	u->check_len = 0;
	u->check_cut = u->check_timed_out = false;
	u->check_ev = event_new(pool->base, u->check_fd, EV_READ | EV_PERSIST,
				check_read_cb, u);
	u->check_timer = evtimer_new(pool->base, check_timeout_cb, u);
	if (u->check_ev == NULL || u->check_timer == NULL ||
	    event_add(u->check_ev, NULL) != 0 ||
	    event_add(u->check_timer, &tv) != 0) {
		/* It ends by itself (or not: then it is killed); its exit
		 * is reaped like any other, and its output read then. */
		fpool_log(FPOOL_LOG_WARNING,
			  "upgrade: cannot watch the check (out of memory); "
			  "it is killed");
		kill(pid, SIGKILL);
		u->check_timed_out = true;
	}
out:
	if (p[0] >= 0)
		close(p[0]);
	free(argv);
	free(envp);
	return err;
}

/* ---- writing the state ---------------------------------------------------- */

/* The fds a state names: all of them lose FD_CLOEXEC for execve(). */
struct fdlist {
	int *v;
	size_t n, cap;
};

static bool fdlist_add(struct fdlist *l, int fd)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		int *v = realloc(l->v, cap * sizeof(*v));

		if (v == NULL)
			return false;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = fd;
	return true;
}

/* "key": fd (recorded in l), or null when fd < 0. */
static bool gen_fd(yajl_gen g, struct fdlist *l, const char *key, int fd)
{
	if (!fpool__json_str(g, key))
		return false;
	if (fd < 0)
		return fpool__json_null(g);
	return fdlist_add(l, fd) && fpool__json_int(g, fd);
}

static bool gen_double(yajl_gen g, const char *key, double v)
{
	char num[64];

	snprintf(num, sizeof(num), "%.6f", v);
	return fpool__json_str(g, key) &&
	       yajl_gen_number(g, num, strlen(num)) == yajl_gen_status_ok;
}

static bool gen_bool(yajl_gen g, const char *key, bool v)
{
	return fpool__json_str(g, key) &&
	       yajl_gen_bool(g, v) == yajl_gen_status_ok;
}

static bool gen_kv_int(yajl_gen g, const char *key, long long v)
{
	return fpool__json_str(g, key) && fpool__json_int(g, v);
}

/* The partial line a pipe holds, in hex (any bytes). */
static bool gen_partial(yajl_gen g, const char *key,
			const struct fpool__linebuf *lb)
{
	static const char digits[] = "0123456789abcdef";
	char *hex;
	bool ok;

	if (lb->len == 0)
		return true;
	hex = malloc(lb->len * 2 + 1);
	if (hex == NULL)
		return false;
	for (size_t i = 0; i < lb->len; i++) {
		hex[2 * i] = digits[(unsigned char)lb->buf[i] >> 4];
		hex[2 * i + 1] = digits[(unsigned char)lb->buf[i] & 15];
	}
	ok = fpool__json_str(g, key) && fpool__json_strn(g, hex, lb->len * 2);
	free(hex);
	return ok;
}

static const char *proc_state_name(enum fpool__proc_state s)
{
	return s == PROC_STARTING ? "starting"
	       : s == PROC_READY  ? "ready"
				  : "stopping";
}

static bool gen_proc(yajl_gen g, struct fdlist *l, const char *role,
		     const struct fpool__proc *p)
{
	return yajl_gen_map_open(g) == yajl_gen_status_ok &&
	       fpool__json_str(g, "role") && fpool__json_str(g, role) &&
	       gen_kv_int(g, "pid", p->pid) &&
	       gen_fd(g, l, "pidfd", p->pidfd) &&
	       gen_fd(g, l, "chan", p->chan) &&
	       gen_fd(g, l, "stdout", p->pipes[0].fd) &&
	       gen_fd(g, l, "stderr", p->pipes[1].fd) &&
	       gen_partial(g, "stdout_partial", &p->pipes[0].lb) &&
	       gen_partial(g, "stderr_partial", &p->pipes[1].lb) &&
	       fpool__json_str(g, "state") &&
	       fpool__json_str(g, proc_state_name(p->state)) &&
	       gen_double(g, "started", p->started) &&
	       gen_double(g, "ready_at", p->ready_at) &&
	       gen_double(g, "stop_sent", p->stop_sent) &&
	       gen_bool(g, "killed", p->killed) &&
	       gen_kv_int(g, "requests", (long long)p->requests) &&
	       gen_kv_int(g, "max_requests", (long long)p->max_requests) &&
	       gen_double(g, "retire_at", p->retire_at) &&
	       gen_double(g, "recycle_after", p->recycle_after) &&
	       gen_bool(g, "inherited", p->inherited) &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

static bool gen_slot(yajl_gen g, struct fdlist *l, const struct fpool__slot *s)
{
	const struct fpool__proc *v[3] = { s->cur, s->next, s->old };
	static const char *const roles[3] = { "cur", "next", "old" };
	bool ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		  gen_kv_int(g, "id", s->id) &&
		  gen_bool(g, "wanted", s->wanted) &&
		  gen_kv_int(g, "failed", s->failed) &&
		  gen_kv_int(g, "restarts", s->restarts) &&
		  gen_bool(g, "recycling", s->recycling) &&
		  gen_bool(g, "backoff", s->backoff) &&
		  gen_double(g, "due", s->due) &&
		  fpool__json_str(g, "last_exit") &&
		  fpool__json_str(g, s->last_exit) &&
		  fpool__json_str(g, "procs") &&
		  yajl_gen_array_open(g) == yajl_gen_status_ok;

	for (int i = 0; ok && i < 3; i++)
		if (v[i] != NULL)
			ok = gen_proc(g, l, roles[i], v[i]);
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

/* The pool's state as JSON (DESIGN.md, "Binary upgrade"); l gets the
 * fds it names. */
static bool gen_state(yajl_gen g, struct fdlist *l, struct fpool_pool *pool,
		      struct fpool__upgrade *u)
{
	int ctl_fd = fpool__control_fd(pool);
	int waiter = u->ctl ? fpool__control_waiter_fd(pool) : -1;
	sigset_t mask;
	bool ok;

	sigprocmask(SIG_BLOCK, NULL, &mask);
	ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
	     gen_kv_int(g, "forkpool-state", FPOOL_STATE_VERSION) &&
	     fpool__json_str(g, "version") &&
	     fpool__json_str(g, FPOOL_VERSION) && fpool__json_str(g, "exe") &&
	     fpool__json_str(g, u->exe) && gen_kv_int(g, "pid", getpid());

	/* The core, which every version reads the same (the fallback). */
	ok = ok && fpool__json_str(g, "listeners") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok;
	for (size_t i = 0; ok && i < pool->nlisteners; i++) {
		const struct fpool__listener *x = &pool->listeners[i];

		if (x->fd < 0)
			continue;
		ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		     gen_fd(g, l, "fd", x->fd) &&
		     fpool__json_str(g, "address") &&
		     fpool__json_str(g, x->addr.text) &&
		     fpool__json_str(g, "unlink") &&
		     (x->unlink_path != NULL
			      ? fpool__json_str(g, x->unlink_path)
			      : fpool__json_null(g)) &&
		     gen_bool(g, "tcp_owned", x->tcp_owned) &&
		     yajl_gen_map_close(g) == yajl_gen_status_ok;
	}
	ok = ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	     fpool__json_str(g, "pids") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok;
	for (unsigned i = 0; ok && i < pool->nslots; i++) {
		const struct fpool__slot *s = pool->slots[i];
		const struct fpool__proc *v[3] = { s ? s->cur : NULL,
						   s ? s->next : NULL,
						   s ? s->old : NULL };

		for (int k = 0; ok && k < 3; k++)
			if (v[k] != NULL)
				ok = fpool__json_int(g, v[k]->pid);
	}
	ok = ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	     fpool__json_str(g, "pidfile");
	if (ok && pool->pidfile_fd >= 0)
		ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		     gen_fd(g, l, "fd", pool->pidfile_fd) &&
		     fpool__json_str(g, "path") &&
		     fpool__json_str(g, pool->cfg.pidfile) &&
		     yajl_gen_map_close(g) == yajl_gen_status_ok;
	else if (ok)
		ok = fpool__json_null(g);
	ok = ok && fpool__json_str(g, "control");
	if (ok && ctl_fd >= 0)
		ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		     gen_fd(g, l, "fd", ctl_fd) && fpool__json_str(g, "path") &&
		     fpool__json_str(g, pool->cfg.control_path) &&
		     gen_fd(g, l, "client", waiter) &&
		     fpool__json_str(g, "id") &&
		     (waiter >= 0 ? fpool__json_str(g, u->ctl_id)
				  : fpool__json_null(g)) &&
		     yajl_gen_map_close(g) == yajl_gen_status_ok;
	else if (ok)
		ok = fpool__json_null(g);
	ok = ok && fpool__json_str(g, "sigmask") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok;
	for (int sig = 1; ok && sig < NSIG; sig++)
		if (sigismember(&mask, sig) == 1)
			ok = fpool__json_int(g, sig);
	ok = ok && yajl_gen_array_close(g) == yajl_gen_status_ok;

	/* This version's own. */
	ok = ok && gen_double(g, "started", pool->started) &&
	     gen_double(g, "began", u->began) &&
	     gen_bool(g, "notified_ready", pool->notified_ready) &&
	     fpool__json_str(g, "activity");
	if (ok && pool->shm != NULL && pool->shm_fd >= 0)
		ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		     gen_fd(g, l, "fd", pool->shm_fd) &&
		     gen_kv_int(g, "size", (long long)pool->shm_len) &&
		     yajl_gen_map_close(g) == yajl_gen_status_ok;
	else if (ok)
		ok = fpool__json_null(g);
	ok = ok && fpool__json_str(g, "slots") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok;
	for (unsigned i = 0; ok && i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			ok = gen_slot(g, l, pool->slots[i]);
	ok = ok && yajl_gen_array_close(g) == yajl_gen_status_ok;

	/* Last, once all are known: every fd handed over. */
	ok = ok && fpool__json_str(g, "fds") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok;
	for (size_t i = 0; ok && i < l->n; i++)
		ok = fpool__json_int(g, l->v[i]);
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

/* The state in a memfd (CLOEXEC, read from its start).  fd or -errno. */
static int state_memfd(const unsigned char *buf, size_t len)
{
	int fd = memfd_create("forkpool-state", MFD_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			close(fd);
			return err;
		}
		off += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/*
 * Hand over to the binary at u->exe: returns only if execve() failed, with
 * -errno and the pool as it was (why[] says what failed).
 */
static int handover(struct fpool_pool *pool, struct fpool__upgrade *u,
		    char *why, size_t whylen)
{
	static const char *const drop[] = { FPOOL_UPGRADE_ENV "=", NULL };
	struct fdlist l = { 0 };
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	char var[64], *here = NULL, **envp = NULL;
	sigset_t all, old;
	size_t len, cleared = 0;
	int fd = -1, err = 0;

	/* What the master holds in memory goes out first: log records held
	 * back from a congested sink, the control clients' replies.  What
	 * waits in the kernel (channels, pipes, sockets) stays there for
	 * the new image to read. */
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			fpool__slot_reading(pool->slots[i], true);
	pool->reading_paused = false;
	fpool__control_flush_clients(pool);
	if (g == NULL || !gen_state(g, &l, pool, u)) {
		snprintf(why, whylen, "cannot write the state: out of memory");
		err = -ENOMEM;
		goto out;
	}
	yajl_gen_get_buf(g, &buf, &len);
	if ((fd = state_memfd(buf, len)) < 0) {
		err = fd;
		snprintf(why, whylen, "cannot write the state to a memfd: %s",
			 strerror(-err));
		goto out;
	}
	snprintf(var, sizeof(var), FPOOL_UPGRADE_ENV "=%d", fd);
	envp = env_copy(drop, var);
	here = getcwd(NULL, 0);
	if (envp == NULL || (u->cwd != NULL && here == NULL)) {
		err = here == NULL && envp != NULL ? -errno : -ENOMEM;
		snprintf(why, whylen, "%s",
			 envp == NULL ? "out of memory"
				      : "cannot tell the current directory");
		goto out;
	}
	fpool_log(FPOOL_LOG_INFO,
		  "upgrade: handing over to %s (%zu bytes of state, %zu fds)",
		  u->exe, len, l.n);
	/* The log is written out now (each wait bounded): the records
	 * queued in memory would go with this image. */
	fpool__log_detach();
	for (int i = 0; i < 2; i++)
		fpool__sink_detach(pool->out[i]);

	for (cleared = 0; cleared < l.n; cleared++)
		if ((err = fpool__fd_cloexec(l.v[cleared], false)) != 0)
			break;
	if (err == 0 && (err = fpool__fd_cloexec(fd, false)) != 0)
		snprintf(why, whylen, "fcntl(fd %d): %s", fd, strerror(-err));
	else if (err != 0)
		snprintf(why, whylen, "fcntl(fd %d): %s", l.v[cleared],
			 strerror(-err));
	if (err == 0 && u->cwd != NULL && chdir(u->cwd) < 0) {
		err = -errno;
		snprintf(why, whylen,
			 "cannot go back to the directory the master started "
			 "in, %s: %s",
			 u->cwd, strerror(errno));
	}
	if (err == 0) {
		/* Nothing may be handled between here and the new image's
		 * own signal events: it unblocks them (pool.c).  A SIGCHLD
		 * stays pending, and the new image reaps anyway. */
		sigfillset(&all);
		sigprocmask(SIG_SETMASK, &all, &old);
		fpool__notify_reloading();
		execve(u->exe, u->argv, envp);
		err = -errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		snprintf(why, whylen, "execve(%s): %s", u->exe, strerror(-err));
		if (u->cwd != NULL && chdir(here) < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "upgrade: cannot return to %s", here);
		/* The pool serves on: systemd hears so. */
		fpool__notify_reloaded();
	}
	/* Undo: every fd close-on-exec again, the log on the loop. */
	for (size_t i = 0; i < cleared && i < l.n; i++)
		fpool__fd_cloexec(l.v[i], true);
	fpool__log_attach(pool->base);
	for (int i = 0; i < 2; i++)
		if (pool->out[i] != NULL)
			fpool__sink_attach(pool->out[i], pool->base);
out:
	if (fd >= 0)
		close(fd);
	free(here);
	free(envp);
	free(l.v);
	if (g != NULL)
		yajl_gen_free(g);
	return err;
}

/* ---- the upgrade's course -------------------------------------------------- */

int fpool__upgrade_set_exec(struct fpool_pool *pool, const char *path, int argc,
			    char *const *argv, const char *cwd)
{
	struct fpool__upgrade *u = fpool__upgrade_get(pool);

	if (u == NULL)
		return -ENOMEM;
	u->exe = strdup(path);
	u->argv = calloc((size_t)argc + 1, sizeof(*u->argv));
	u->cwd = cwd != NULL ? strdup(cwd) : NULL;
	if (u->exe == NULL || u->argv == NULL || (cwd != NULL && !u->cwd))
		return -ENOMEM;
	/* argv[0] is the absolute path: the new image finds itself by it
	 * even when the master runs in "/" (--daemon). */
	u->argv[0] = u->exe;
	for (int i = 1; i < argc; i++)
		if ((u->argv[i] = strdup(argv[i])) == NULL)
			return -ENOMEM;
	return 0;
}

const char *fpool__upgrade_phase(const struct fpool_pool *pool)
{
	const struct fpool__upgrade *u = pool->upgrade;

	if (u == NULL || u->phase == UP_IDLE)
		return NULL;
	return u->phase == UP_CHECKING ? "checking" : "replacing";
}

bool fpool__upgrade_busy(const struct fpool_pool *pool)
{
	return fpool__upgrade_phase(pool) != NULL;
}

const char *fpool__upgrade_start(struct fpool_pool *pool, const char *ctl_id)
{
	static char why[256];
	struct fpool__upgrade *u = pool->upgrade;
	const char *who = ctl_id != NULL ? "control" : "SIGUSR2";
	int err;

	if (pool->state != POOL_RUNNING)
		snprintf(why, sizeof(why),
			 "the pool is not running (stopping, or not started)");
	else if (u == NULL || u->exe == NULL)
		snprintf(why, sizeof(why),
			 "this program cannot re-execute itself (only the "
			 "forkpool program knows its binary)");
	else if (u->phase != UP_IDLE)
		snprintf(why, sizeof(why),
			 "an upgrade is under way (%s since %.1f s)",
			 u->phase == UP_CHECKING ? "checking the new binary"
						 : "replacing the workers",
			 fpool__now() - u->began);
	else
		why[0] = '\0';
	if (why[0] != '\0') {
		fpool_log(FPOOL_LOG_WARNING, "upgrade (%s) refused: %s", who,
			  why);
		return why;
	}
	u->began = fpool__now();
	u->ctl = ctl_id != NULL;
	snprintf(u->ctl_id, sizeof(u->ctl_id), "%s", ctl_id ? ctl_id : "");
	u->reload_pending = false;
	fpool_log(FPOOL_LOG_INFO, "upgrade (%s): checking %s --check", who,
		  u->exe);
	fpool__event_phase(pool, "upgrade", "begin", u->exe);
	if ((err = check_spawn(pool, u)) != 0) {
		snprintf(why, sizeof(why), "cannot run %s --check: %s", u->exe,
			 strerror(-err));
		fpool_log(FPOOL_LOG_ERROR,
			  "upgrade failed: %s; nothing changed", why);
		fpool__event_phase(pool, "upgrade", "failed", why);
		return why;
	}
	u->phase = UP_CHECKING;
	return NULL;
}

bool fpool__upgrade_defer_reload(struct fpool_pool *pool)
{
	struct fpool__upgrade *u = pool->upgrade;

	if (u == NULL || u->phase != UP_CHECKING)
		return false;
	if (!u->reload_pending)
		fpool_log(FPOOL_LOG_INFO,
			  "reload: waits for the binary upgrade under way");
	u->reload_pending = true;
	return true;
}

/* The upgrade ended in this image: answer the client, if one waits. */
static void upgrade_done(struct fpool_pool *pool, const char *error,
			 const char *result)
{
	struct fpool__upgrade *u = pool->upgrade;
	bool reload = u->reload_pending;

	u->phase = UP_IDLE;
	u->reload_pending = false;
	fpool__event_phase(pool, "upgrade", error != NULL ? "failed" : "end",
			   error);
	if (u->ctl)
		fpool__control_answer(pool, u->ctl_id, error, result);
	u->ctl = false;
	if (reload && pool->state == POOL_RUNNING) {
		fpool_log(FPOOL_LOG_INFO,
			  "reload: the upgrade is over; the reload asked "
			  "meanwhile starts");
		fpool_pool_reload(pool);
	}
}

bool fpool__upgrade_reaped(struct fpool_pool *pool, pid_t pid, int status)
{
	struct fpool__upgrade *u = pool->upgrade;
	char how[96], why[FPOOL_UPGRADE_CHECK_OUT + 512];
	int err;

	if (u == NULL)
		return false;
	for (size_t i = 0; i < u->nold; i++) {
		if (u->old_pids[i] != pid)
			continue;
		fpool__describe_status(status, how, sizeof(how));
		fpool_log(FPOOL_LOG_INFO,
			  "upgrade: pid %d of the previous image %s", (int)pid,
			  how);
		u->old_pids[i] = u->old_pids[--u->nold];
		return true;
	}
	if (u->check_pid <= 0 || pid != u->check_pid)
		return false;
	u->check_pid = 0;
	check_read(u, true);
	check_free(u);
	fpool__describe_status(status, how, sizeof(how));
	if (pool->state != POOL_RUNNING) {
		snprintf(why, sizeof(why), "the pool is stopping");
	} else if (u->check_timed_out) {
		snprintf(why, sizeof(why),
			 "%s --check did not finish within %g s (killed): %s",
			 u->exe, FPOOL_UPGRADE_CHECK_TIMEOUT, check_output(u));
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, sizeof(why), "%s --check %s: %s", u->exe, how,
			 check_output(u));
	} else {
		fpool_log(FPOOL_LOG_INFO, "upgrade: %s --check passed (%.3f s)",
			  u->exe, fpool__now() - u->began);
		err = handover(pool, u, why, sizeof(why));
		(void)err; /* returns only on failure; why[] says it */
	}
	fpool_log(FPOOL_LOG_ERROR,
		  "upgrade failed: %s; the master goes on with its binary and "
		  "workers",
		  why);
	upgrade_done(pool, why, NULL);
	return true;
}

void fpool__upgrade_reap(struct fpool_pool *pool)
{
	for (;;) {
		struct fpool__upgrade *u = pool->upgrade;
		pid_t pid = 0, r;
		int status = 0;

		if (u == NULL)
			return;
		/* The previous image's processes, then the check.  Acting
		 * on one may end the upgrade (u freed): start over. */
		for (size_t i = 0; i <= u->nold && pid == 0; i++) {
			pid_t want =
				i < u->nold ? u->old_pids[i] : u->check_pid;

			if (want <= 0)
				continue;
			while ((r = waitpid(want, &status, WNOHANG)) < 0 &&
			       errno == EINTR)
				;
			if (r < 0 && errno != ECHILD)
				fpool__log_errno(FPOOL_LOG_ERROR, errno,
						 "waitpid(%d)", (int)want);
			if (r == want)
				pid = r;
		}
		if (pid == 0 || !fpool__upgrade_reaped(pool, pid, status))
			return;
	}
}

void fpool__upgrade_reload_done(struct fpool_pool *pool, bool complete)
{
	struct fpool__upgrade *u = pool->upgrade;
	char result[64];

	if (u == NULL || u->phase != UP_REPLACING)
		return;
	if (complete)
		fpool_log(FPOOL_LOG_INFO,
			  "upgrade complete: the workers run the new binary "
			  "(%.3f s after it was asked for)",
			  fpool__now() - u->began);
	else
		fpool_log(FPOOL_LOG_WARNING,
			  "upgrade: the reload was aborted; workers of the "
			  "previous binary are recycled one by one instead");
	snprintf(result, sizeof(result), "true");
	upgrade_done(pool, NULL, result);
}

void fpool__upgrade_pool_ready(struct fpool_pool *pool)
{
	struct fpool__upgrade *u = pool->upgrade;
	struct fpool__counts c;

	if (u == NULL || u->old_st == NULL)
		return;
	fpool__pool_counts(pool, &c);
	if (c.ready < c.target)
		return;
	fpool_log(FPOOL_LOG_INFO,
		  "upgrade: the fresh pool is ready; stopping the %zu "
		  "processes of the previous image (SIGTERM)",
		  u->nold);
	/* Only we reap them, and those in the list are not reaped yet:
	 * each pid is still the process it names. */
	for (size_t i = 0; i < u->nold; i++)
		if (kill(u->old_pids[i], SIGTERM) < 0 && errno != ESRCH)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "upgrade: SIGTERM to pid %d",
					 (int)u->old_pids[i]);
	/* Their channels close now too (they would take that as the
	 * master's end, and stop as well). */
	fpool__state_free(u->old_st);
	u->old_st = NULL;
}

void fpool__upgrade_free(struct fpool__upgrade *u)
{
	if (u == NULL)
		return;
	if (u->check_pid > 0) {
		/* The pool is gone: so is the check. */
		kill(u->check_pid, SIGKILL);
		while (waitpid(u->check_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	check_free(u);
	for (size_t i = 0; u->argv != NULL && u->argv[i] != NULL; i++)
		if (u->argv[i] != u->exe)
			free(u->argv[i]);
	free(u->argv);
	free(u->exe);
	free(u->cwd);
	free(u->old_pids);
	fpool__state_free(u->st);
	fpool__state_free(u->old_st);
	free(u);
}
