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
 * In the new image (the same process): fpool__state_load() reads the
 * state at start (the program's main), the listeners serve the --bind
 * addresses they match, and fpool_pool_run() adopts the rest instead of
 * daemonizing, taking the pidfile, binding the control socket and
 * forking: each process keeps its channel and output pipes, a process
 * that exited meanwhile is reaped at once, then a rolling reload replaces
 * every worker with one forked by the new image, and systemd hears
 * READY=1 when it completes.  A state this version cannot read (another
 * major version, a fd or pid that is not what it says) falls back to the
 * core every version keeps: the listeners, the pidfile and the control
 * socket are kept, fresh workers are started, and the old ones are told
 * to stop (SIGTERM) once the fresh pool is ready.
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

/* Bytes of the check's output kept for the log and the answer. */
#define CHECK_OUT_MAX 2048
/* Nesting of the state (objects in arrays in objects...). */
#define STATE_DEPTH 16
/* Largest state read (4096 slots of three processes fit well within). */
#define STATE_MAX (64 * 1024 * 1024)

enum phase {
	UP_IDLE,
	UP_CHECKING,  /* the pre-flight check runs */
	UP_REPLACING, /* the new image replaces the inherited workers */
};

struct fpool__upgrade {
	/* What is executed (fpool__upgrade_set_exec), or NULL. */
	char *exe;
	char **argv; /* NULL-terminated; argv[0] is exe */
	char *cwd;
	enum phase phase;
	bool ctl;	     /* a control client waits for the answer */
	char ctl_id[65];     /* its request's id */
	bool reload_pending; /* a reload was asked during the check */
	double began;
	/* The pre-flight check. */
	pid_t check_pid; /* 0: none running */
	int check_fd;	 /* its stdout and stderr, or -1 */
	struct event *check_ev, *check_timer;
	char check_out[CHECK_OUT_MAX];
	size_t check_len;
	bool check_cut, check_timed_out;
	/* The new image: the state handed over, until adopted. */
	struct fpool__state *st;
	/* The fallback: processes of the previous image, stopped once the
	 * fresh pool is ready, and until then the state, whose fds (their
	 * channels, pipes) stay open so that they do not stop before. */
	pid_t *old_pids;
	size_t nold;
	struct fpool__state *old_st;
};

/* A listener handed over. */
struct st_listener {
	int fd;
	char *unlink_path; /* the unix socket file it removes at exit */
	bool tcp_owned;
	bool taken; /* serves a --bind of the new image */
};

/* A state as the new image read it. */
struct fpool__state {
	yajl_val tree;
	bool fallback; /* not this version's: keep the core only */
	char why[256]; /* why the fallback */
	int *fds;      /* every fd handed over ("fds") */
	bool *used;    /* fds[i] was adopted */
	size_t nfds;
	struct st_listener *listeners;
	size_t nlisteners;
	pid_t *pids; /* the workers of the previous image */
	size_t npids;
	int pidfile_fd;
	const char *pidfile_path;
	int control_fd, client_fd;
	const char *control_path;
	char ctl_id[65];
	sigset_t mask; /* the mask before the hand-over */
	const char *version, *exe;
};

/* ---- small helpers ------------------------------------------------------ */

static struct fpool__upgrade *upgrade_get(struct fpool_pool *pool)
{
	if (pool->upgrade == NULL) {
		pool->upgrade = calloc(1, sizeof(*pool->upgrade));
		if (pool->upgrade != NULL)
			pool->upgrade->check_fd = -1;
	}
	return pool->upgrade;
}

static int set_cloexec(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0)
		return -errno;
	if (on == ((fl & FD_CLOEXEC) != 0))
		return 0;
	fl = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
	return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

/* The parent of pid (from /proc), or -1. */
static pid_t parent_of(pid_t pid)
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
	static char out[CHECK_OUT_MAX + 32];
	size_t n = 0;

	for (size_t i = 0; i < u->check_len && n + 3 < CHECK_OUT_MAX; i++) {
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
			if (u->check_len < CHECK_OUT_MAX - 1)
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
		if ((err = set_cloexec(l.v[cleared], false)) != 0)
			break;
	if (err == 0 && (err = set_cloexec(fd, false)) != 0)
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
		set_cloexec(l.v[i], true);
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
	struct fpool__upgrade *u = upgrade_get(pool);

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
	if ((err = check_spawn(pool, u)) != 0) {
		snprintf(why, sizeof(why), "cannot run %s --check: %s", u->exe,
			 strerror(-err));
		fpool_log(FPOOL_LOG_ERROR,
			  "upgrade failed: %s; nothing changed", why);
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
	char how[96], why[CHECK_OUT_MAX + 512];
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

/* ---- reading a state (the new image) ------------------------------------- */

void fpool__state_free(struct fpool__state *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < st->nfds; i++)
		if (!st->used[i])
			close(st->fds[i]);
	for (size_t i = 0; i < st->nlisteners; i++)
		free(st->listeners[i].unlink_path);
	free(st->listeners);
	free(st->fds);
	free(st->used);
	free(st->pids);
	if (st->tree != NULL)
		yajl_tree_free(st->tree);
	free(st);
}

/* A whole number under key (or null: *out = null_value).  false if
 * missing, of another type or out of [min, max]. */
static bool get_int(yajl_val o, const char *key, long long min, long long max,
		    long long *out)
{
	yajl_val v = fpool__json_get(o, key);

	if (v == NULL || !YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < min ||
	    YAJL_GET_INTEGER(v) > max)
		return false;
	*out = YAJL_GET_INTEGER(v);
	return true;
}

static bool get_double(yajl_val o, const char *key, double *out)
{
	yajl_val v = fpool__json_get(o, key);

	if (v == NULL || !YAJL_IS_DOUBLE(v))
		return false;
	*out = YAJL_GET_DOUBLE(v);
	return true;
}

static bool get_bool(yajl_val o, const char *key, bool *out)
{
	yajl_val v = fpool__json_get(o, key);

	if (v == NULL || !(YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)))
		return false;
	*out = YAJL_IS_TRUE(v);
	return true;
}

static const char *get_str(yajl_val o, const char *key)
{
	yajl_val v = fpool__json_get(o, key);

	return v != NULL && YAJL_IS_STRING(v) ? v->u.string : NULL;
}

/* The index of fd among the handed fds, or -1. */
static ssize_t fd_index(const struct fpool__state *st, int fd)
{
	for (size_t i = 0; i < st->nfds; i++)
		if (st->fds[i] == fd)
			return (ssize_t)i;
	return -1;
}

enum fd_kind { FD_SOCKET, FD_FIFO, FD_FILE, FD_PIDFD };

/* fd is one the state handed over, not taken yet, of that kind. */
static bool fd_is(const struct fpool__state *st, int fd, enum fd_kind kind)
{
	ssize_t i = fd_index(st, fd);
	struct stat sb;
	char path[64], link[64];
	ssize_t n;

	if (i < 0 || st->used[i] || fstat(fd, &sb) < 0)
		return false;
	switch (kind) {
	case FD_SOCKET:
		return S_ISSOCK(sb.st_mode);
	case FD_FIFO:
		return S_ISFIFO(sb.st_mode);
	case FD_FILE:
		return S_ISREG(sb.st_mode);
	case FD_PIDFD:
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			return false;
		link[n] = '\0';
		/* "pidfd:[N]" where pidfds have a file system of their
		 * own (pidfs, Linux 6.9), in some configurations. */
		return strcmp(link, "anon_inode:[pidfd]") == 0 ||
		       strncmp(link, "pidfd:", 6) == 0;
	}
	return false;
}

static void fd_take(struct fpool__state *st, int fd)
{
	ssize_t i = fd_index(st, fd);

	if (i >= 0)
		st->used[i] = true;
}

/* The pid a pidfd refers to (/proc/self/fdinfo), or -1. */
static pid_t pidfd_pid(int fd)
{
	char path[64], line[128];
	FILE *f;
	long pid = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "Pid: %ld", &pid) == 1)
			break;
	fclose(f);
	return (pid_t)pid;
}

/* A request id as the control socket takes them (commands.c). */
static bool hex_id(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > 64)
		return false;
	return strspn(s, "0123456789abcdefABCDEF") == n;
}

/* Read the core every version keeps: the fds, the listeners, the pids,
 * the pidfile and the control socket.  false, with why[], if even that
 * cannot be read. */
static bool read_core(struct fpool__state *st, char *why, size_t whylen)
{
	yajl_val fds = fpool__json_get(st->tree, "fds");
	yajl_val ls = fpool__json_get(st->tree, "listeners");
	yajl_val pids = fpool__json_get(st->tree, "pids");
	yajl_val mask = fpool__json_get(st->tree, "sigmask");
	yajl_val o;
	long long v;
	size_t n;

	if (!YAJL_IS_ARRAY(fds) || !YAJL_IS_ARRAY(ls) || !YAJL_IS_ARRAY(pids)) {
		snprintf(why, whylen, "no \"fds\", \"listeners\" or \"pids\"");
		return false;
	}
	n = fds->u.array.len;
	st->fds = calloc(n ? n : 1, sizeof(*st->fds));
	st->used = calloc(n ? n : 1, sizeof(*st->used));
	st->listeners = calloc(ls->u.array.len ? ls->u.array.len : 1,
			       sizeof(*st->listeners));
	st->pids = calloc(pids->u.array.len ? pids->u.array.len : 1,
			  sizeof(*st->pids));
	if (st->fds == NULL || st->used == NULL || st->listeners == NULL ||
	    st->pids == NULL) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	/* Every fd named is ours now; none goes to what we start. */
	for (size_t i = 0; i < n; i++) {
		yajl_val x = fds->u.array.values[i];
		int fd;

		if (!YAJL_IS_INTEGER(x) || YAJL_GET_INTEGER(x) < 0 ||
		    YAJL_GET_INTEGER(x) > INT_MAX)
			continue;
		fd = (int)YAJL_GET_INTEGER(x);
		if (fd_index(st, fd) >= 0 || set_cloexec(fd, true) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "upgrade: fd %d of the state is not open "
				  "(or named twice); ignored",
				  fd);
			continue;
		}
		st->fds[st->nfds++] = fd;
	}
	for (size_t i = 0; i < ls->u.array.len; i++) {
		struct st_listener *x = &st->listeners[st->nlisteners];
		const char *path;

		o = ls->u.array.values[i];
		if (!get_int(o, "fd", 0, INT_MAX, &v) ||
		    !fd_is(st, (int)v, FD_SOCKET)) {
			fpool_log(FPOOL_LOG_WARNING,
				  "upgrade: listener %zu of the state is not "
				  "a socket handed over; ignored",
				  i);
			continue;
		}
		x->fd = (int)v;
		path = get_str(o, "unlink");
		if (path != NULL && (x->unlink_path = strdup(path)) == NULL) {
			snprintf(why, whylen, "out of memory");
			return false;
		}
		get_bool(o, "tcp_owned", &x->tcp_owned);
		fd_take(st, x->fd);
		st->nlisteners++;
	}
	for (size_t i = 0; i < pids->u.array.len; i++) {
		yajl_val x = pids->u.array.values[i];

		if (!YAJL_IS_INTEGER(x) || YAJL_GET_INTEGER(x) <= 1 ||
		    YAJL_GET_INTEGER(x) > INT_MAX)
			continue;
		/* Only our children: another process of that pid is not
		 * ours to signal. */
		if (parent_of((pid_t)YAJL_GET_INTEGER(x)) != getpid()) {
			fpool_log(FPOOL_LOG_WARNING,
				  "upgrade: pid %lld of the state is not a "
				  "child of this master; ignored",
				  YAJL_GET_INTEGER(x));
			continue;
		}
		st->pids[st->npids++] = (pid_t)YAJL_GET_INTEGER(x);
	}
	st->pidfile_fd = st->control_fd = st->client_fd = -1;
	o = fpool__json_get(st->tree, "pidfile");
	if (YAJL_IS_OBJECT(o) && get_int(o, "fd", 0, INT_MAX, &v) &&
	    get_str(o, "path") != NULL && fd_is(st, (int)v, FD_FILE)) {
		st->pidfile_fd = (int)v;
		st->pidfile_path = get_str(o, "path");
		fd_take(st, st->pidfile_fd);
	}
	o = fpool__json_get(st->tree, "control");
	if (YAJL_IS_OBJECT(o) && get_int(o, "fd", 0, INT_MAX, &v) &&
	    get_str(o, "path") != NULL && fd_is(st, (int)v, FD_SOCKET)) {
		st->control_fd = (int)v;
		st->control_path = get_str(o, "path");
		fd_take(st, st->control_fd);
		if (get_int(o, "client", 0, INT_MAX, &v) &&
		    hex_id(get_str(o, "id")) && fd_is(st, (int)v, FD_SOCKET)) {
			st->client_fd = (int)v;
			snprintf(st->ctl_id, sizeof(st->ctl_id), "%s",
				 get_str(o, "id"));
			fd_take(st, st->client_fd);
		}
	}
	sigemptyset(&st->mask);
	for (size_t i = 0; YAJL_IS_ARRAY(mask) && i < mask->u.array.len; i++) {
		yajl_val x = mask->u.array.values[i];

		if (YAJL_IS_INTEGER(x) && YAJL_GET_INTEGER(x) > 0 &&
		    YAJL_GET_INTEGER(x) < NSIG)
			sigaddset(&st->mask, (int)YAJL_GET_INTEGER(x));
	}
	st->version = get_str(st->tree, "version");
	st->exe = get_str(st->tree, "exe");
	return true;
}

int fpool__state_load(struct fpool__state **out)
{
	const char *var = getenv(FPOOL_UPGRADE_ENV);
	struct fpool__state *st;
	char path[64], link[128], errbuf[128];
	const char *bad;
	struct stat sb;
	unsigned v;
	long long major = 0;
	char *text = NULL;
	size_t off = 0;
	ssize_t n;
	int fd;

	*out = NULL;
	if (var == NULL)
		return 0;
	/* Ours alone: neither the workers nor a later image see it. */
	if (fpool__parse_uint(var, 0, INT_MAX, &v) != 0) {
		fpool_log(FPOOL_LOG_WARNING,
			  "%s='%s' is not an fd; ignored (a fresh start)",
			  FPOOL_UPGRADE_ENV, var);
		unsetenv(FPOOL_UPGRADE_ENV);
		return 0;
	}
	unsetenv(FPOOL_UPGRADE_ENV);
	fd = (int)v;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n >= 0)
		link[n] = '\0';
	if (n < 0 || strncmp(link, "/memfd:forkpool-state", 21) != 0) {
		fpool_log(FPOOL_LOG_WARNING,
			  "%s=%d does not name a forkpool state; ignored (a "
			  "fresh start)",
			  FPOOL_UPGRADE_ENV, fd);
		return 0;
	}
	set_cloexec(fd, true);
	st = calloc(1, sizeof(*st));
	if (st == NULL || fstat(fd, &sb) < 0 || sb.st_size <= 0 ||
	    sb.st_size > STATE_MAX ||
	    (text = malloc((size_t)sb.st_size + 1)) == NULL) {
		fpool_log(FPOOL_LOG_ERROR,
			  "upgrade: cannot read the state (fd %d): %s", fd,
			  st == NULL ? "out of memory" : "bad size");
		goto fail;
	}
	while (off < (size_t)sb.st_size) {
		n = pread(fd, text + off, (size_t)sb.st_size - off, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, n < 0 ? errno : EIO,
					 "upgrade: reading the state");
			goto fail;
		}
		off += (size_t)n;
	}
	text[off] = '\0';
	close(fd);
	fd = -1;
	if ((bad = fpool_json_check(text, off, STATE_DEPTH,
				    FPOOL_JSON_NO_COMMENTS)) != NULL ||
	    (st->tree = yajl_tree_parse(text, errbuf, sizeof(errbuf))) ==
		    NULL ||
	    !YAJL_IS_OBJECT(st->tree)) {
		if (bad == NULL)
			errbuf[strcspn(errbuf, "\n")] = '\0';
		fpool_log(FPOOL_LOG_ERROR,
			  "upgrade: the state is not a JSON object: %s",
			  bad != NULL ? bad : errbuf);
		goto fail;
	}
	free(text);
	text = NULL;
	if (!get_int(st->tree, "forkpool-state", 1, INT_MAX, &major)) {
		fpool_log(FPOOL_LOG_ERROR,
			  "upgrade: the state has no \"forkpool-state\" "
			  "version");
		goto fail;
	}
	if (!read_core(st, errbuf, sizeof(errbuf))) {
		fpool_log(FPOOL_LOG_ERROR, "upgrade: cannot read the state: %s",
			  errbuf);
		goto fail;
	}
	if (major != FPOOL_STATE_VERSION) {
		st->fallback = true;
		snprintf(st->why, sizeof(st->why),
			 "its format is version %lld, this binary reads "
			 "version %d",
			 major, FPOOL_STATE_VERSION);
	}
	*out = st;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(text);
	fpool__state_free(st);
	return -EINVAL;
}

size_t fpool__state_nlisteners(const struct fpool__state *st)
{
	return st->nlisteners;
}

int fpool__state_listener(const struct fpool__state *st, size_t i)
{
	return st->listeners[i].taken ? -1 : st->listeners[i].fd;
}

int fpool__state_take_listener(struct fpool_pool *pool, struct fpool__state *st,
			       size_t i)
{
	struct st_listener *x = &st->listeners[i];
	struct fpool__addr a;
	int listening = 0, err;
	socklen_t len = sizeof(listening);

	if ((err = fpool__addr_from_fd(x->fd, &a)) != 0)
		return err;
	/* A socket reserved for --reuse-port does not listen; without
	 * --reuse-port now, the workers share it, so it must. */
	if (!pool->cfg.reuse_port &&
	    getsockopt(x->fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) ==
		    0 &&
	    !listening && listen(x->fd, SOMAXCONN) < 0)
		return -errno;
	if ((err = fpool__pool_add_listener(pool, x->fd, &a,
					    x->unlink_path != NULL)) != 0)
		return err;
	pool->listeners[pool->nlisteners - 1].tcp_owned = x->tcp_owned;
	x->taken = true;
	fpool_log(FPOOL_LOG_INFO, "listening on %s (handed over)", a.text);
	return 0;
}

void fpool__pool_adopt(struct fpool_pool *pool, struct fpool__state *st)
{
	struct fpool__upgrade *u = upgrade_get(pool);

	if (u == NULL) {
		/* Nothing can be adopted: the listeners and processes
		 * handed over are closed and left to end. */
		fpool_log(FPOOL_LOG_ERROR, "upgrade: out of memory; starting "
					   "afresh");
		fpool__state_free(st);
		return;
	}
	/* A listener that serves no --bind now is closed here (the old
	 * workers keep their copies until they stop). */
	for (size_t i = 0; i < st->nlisteners; i++) {
		ssize_t k = fd_index(st, st->listeners[i].fd);

		if (!st->listeners[i].taken && k >= 0) {
			struct fpool__addr a;

			if (fpool__addr_from_fd(st->listeners[i].fd, &a) == 0)
				fpool_log(FPOOL_LOG_INFO,
					  "upgrade: %s serves no --bind any "
					  "more; closed",
					  a.text);
			st->used[k] = false;
		}
	}
	u->st = st;
}

bool fpool__upgrade_adopting(const struct fpool_pool *pool)
{
	return pool->upgrade != NULL && pool->upgrade->st != NULL;
}

/* ---- adopting (the new image, in fpool_pool_run) -------------------------- */

int fpool__upgrade_adopt_detach(struct fpool_pool *pool)
{
	struct fpool__state *st = pool->upgrade->st;
	pid_t holder = 0;
	int err;

	pool->master_pid = getpid();
	/* The daemon runs in "/" (daemon.c); the exec happened where the
	 * master started, so that relative paths meant the same. */
	if (pool->cfg.daemonize && chdir("/") < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "upgrade: chdir /");
	if (st->pidfile_fd >= 0 && pool->cfg.pidfile != NULL &&
	    strcmp(st->pidfile_path, pool->cfg.pidfile) == 0) {
		/* Same file, same pid, same lock: nothing to write. */
		pool->pidfile_fd = st->pidfile_fd;
		return 0;
	}
	if (st->pidfile_fd >= 0) {
		fpool__pidfile_remove(st->pidfile_path, st->pidfile_fd);
		st->used[fd_index(st, st->pidfile_fd)] = true;
		st->pidfile_fd = -1;
	}
	if (pool->cfg.pidfile == NULL)
		return 0;
	err = fpool__pidfile_take(pool->cfg.pidfile, &pool->pidfile_fd,
				  &holder);
	if (err == -EEXIST)
		fpool_log(FPOOL_LOG_ERROR, "pidfile %s is held by pid %d",
			  pool->cfg.pidfile, (int)holder);
	else if (err != 0)
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot take pidfile %s", pool->cfg.pidfile);
	return err;
}

/* Tell a client on fd that could not be handed to the control socket,
 * without waiting, and close it. */
static void answer_raw(int fd, const char *id, const char *error)
{
	char line[512];
	int n = snprintf(line, sizeof(line),
			 "{\"id\":\"%s\",\"ok\":false,\"error\":\"%s\"}\n", id,
			 error);

	if (n > 0 && send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		fpool__log_errno(FPOOL_LOG_DEBUG, errno,
				 "upgrade: answering the control client");
	close(fd);
}

int fpool__upgrade_adopt_control(struct fpool_pool *pool)
{
	struct fpool__state *st = pool->upgrade->st;
	const char *path = pool->cfg.control_path;
	int err;

	if (st->control_fd >= 0 && path != NULL &&
	    strcmp(st->control_path, path) == 0 &&
	    fpool__control_adopt(pool, path, st->control_fd, st->client_fd) ==
		    0) {
		if (st->client_fd >= 0) {
			pool->upgrade->ctl = true;
			snprintf(pool->upgrade->ctl_id,
				 sizeof(pool->upgrade->ctl_id), "%s",
				 st->ctl_id);
		}
		return 0;
	}
	if (st->control_fd >= 0) {
		/* Another path now: the old socket goes, as at exit. */
		if (unlink(st->control_path) < 0 && errno != ENOENT)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "removing %s", st->control_path);
		close(st->control_fd);
		st->control_fd = -1;
		if (st->client_fd >= 0)
			answer_raw(st->client_fd, st->ctl_id,
				   "upgraded, but the control socket moved");
		st->client_fd = -1;
	}
	if (path != NULL && (err = fpool__control_open(pool, path)) != 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "cannot open the control socket %s", path);
		return err;
	}
	return 0;
}

static void no_line(const char *line, size_t len, void *arg)
{
	(void)line;
	(void)len;
	(void)arg;
}

/* Hex digits back to bytes, into a pipe's partial line (one with no
 * newline, shorter than a line is kept whole: as the old image held it). */
static void restore_partial(struct fpool__pipe *pipe, const char *hex)
{
	size_t n = hex != NULL ? strlen(hex) / 2 : 0;
	char *bytes;

	if (n == 0 || n >= FPOOL_LINE_MAX || (bytes = malloc(n)) == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		unsigned b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			b = '?';
		bytes[i] = (char)b;
	}
	if (memchr(bytes, '\n', n) == NULL)
		fpool__linebuf_feed(&pipe->lb, bytes, n, no_line, NULL);
	free(bytes);
}

static bool parse_state_name(const char *s, enum fpool__proc_state *out)
{
	if (s == NULL)
		return false;
	if (strcmp(s, "starting") == 0)
		*out = PROC_STARTING;
	else if (strcmp(s, "ready") == 0)
		*out = PROC_READY;
	else if (strcmp(s, "stopping") == 0)
		*out = PROC_STOPPING;
	else
		return false;
	return true;
}

/* One process of the state into slot s.  NULL with why[] if it is not
 * what it says. */
static struct fpool__proc *adopt_proc(struct fpool__state *st,
				      struct fpool__slot *s, yajl_val o,
				      char *why, size_t whylen)
{
	struct fpool__proc *p;
	long long pid, fd, n;
	const char *keys[4] = { "pidfd", "chan", "stdout", "stderr" };
	const enum fd_kind kinds[4] = { FD_PIDFD, FD_SOCKET, FD_FIFO, FD_FIFO };
	int fds[4];
	bool ours = false;

	if (!get_int(o, "pid", 2, INT_MAX, &pid)) {
		snprintf(why, whylen, "worker %u: no pid", s->id);
		return NULL;
	}
	for (size_t i = 0; i < st->npids && !ours; i++)
		ours = st->pids[i] == (pid_t)pid;
	if (!ours) {
		snprintf(why, whylen, "worker %u pid %lld is not our child",
			 s->id, pid);
		return NULL;
	}
	for (int i = 0; i < 4; i++) {
		yajl_val v = fpool__json_get(o, keys[i]);

		fds[i] = -1;
		if (v != NULL && YAJL_IS_NULL(v))
			continue;
		if (!get_int(o, keys[i], 0, INT_MAX, &fd) ||
		    !fd_is(st, (int)fd, kinds[i])) {
			snprintf(why, whylen,
				 "worker %u pid %lld: its %s is not a %s "
				 "handed over",
				 s->id, pid, keys[i],
				 i == 0	  ? "pidfd"
				 : i == 1 ? "socket"
					  : "pipe");
			return NULL;
		}
		fds[i] = (int)fd;
	}
	if (fds[0] >= 0 && pidfd_pid(fds[0]) != (pid_t)pid) {
		snprintf(why, whylen,
			 "worker %u pid %lld: its pidfd names another process",
			 s->id, pid);
		return NULL;
	}
	p = fpool__proc_blank(s);
	if (p == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	p->pid = (pid_t)pid;
	if (!parse_state_name(get_str(o, "state"), &p->state) ||
	    !get_double(o, "started", &p->started) ||
	    !get_double(o, "ready_at", &p->ready_at) ||
	    !get_double(o, "stop_sent", &p->stop_sent) ||
	    !get_bool(o, "killed", &p->killed) ||
	    !get_int(o, "requests", 0, LLONG_MAX, &n)) {
		snprintf(why, whylen, "worker %u pid %lld: malformed", s->id,
			 pid);
		fpool__proc_free(p);
		return NULL;
	}
	p->requests = (uint64_t)n;
	if (get_int(o, "max_requests", 0, LLONG_MAX, &n))
		p->max_requests = (uint64_t)n;
	get_double(o, "retire_at", &p->retire_at);
	get_double(o, "recycle_after", &p->recycle_after);
	p->inherited = true;
	for (int i = 0; i < 4; i++)
		fd_take(st, fds[i]);
	p->pidfd = fds[0];
	p->chan = fds[1];
	p->pipes[0].fd = fds[2];
	p->pipes[1].fd = fds[3];
	restore_partial(&p->pipes[0], get_str(o, "stdout_partial"));
	restore_partial(&p->pipes[1], get_str(o, "stderr_partial"));
	return p;
}

/* Build the slots from the state.  false with why[]: the fallback (the
 * slots built so far are then freed, and their fds left to close). */
static bool adopt_slots(struct fpool_pool *pool, struct fpool__state *st,
			char *why, size_t whylen, unsigned *nprocs)
{
	yajl_val slots = fpool__json_get(st->tree, "slots");
	struct fpool__slot **v = NULL;
	unsigned nslots = 0;
	long long id, n;

	*nprocs = 0;
	if (!YAJL_IS_ARRAY(slots)) {
		snprintf(why, whylen, "no \"slots\"");
		return false;
	}
	for (size_t i = 0; i < slots->u.array.len; i++) {
		if (!get_int(slots->u.array.values[i], "id", 0,
			     FPOOL_MAX_WORKERS - 1, &id)) {
			snprintf(why, whylen, "slot %zu: no id", i);
			return false;
		}
		if ((unsigned)id + 1 > nslots)
			nslots = (unsigned)id + 1;
	}
	if (nslots == 0) {
		snprintf(why, whylen, "no slot");
		return false;
	}
	v = calloc(nslots, sizeof(*v));
	if (v == NULL) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	for (size_t i = 0; i < slots->u.array.len; i++) {
		yajl_val o = slots->u.array.values[i];
		yajl_val procs = fpool__json_get(o, "procs");
		struct fpool__slot *s;
		const char *last;

		get_int(o, "id", 0, FPOOL_MAX_WORKERS - 1, &id);
		if (v[id] != NULL) {
			snprintf(why, whylen, "slot %lld twice", id);
			goto fail;
		}
		s = v[id] = fpool__slot_new(pool, (unsigned)id);
		if (s == NULL) {
			snprintf(why, whylen, "out of memory");
			goto fail;
		}
		if (!get_bool(o, "wanted", &s->wanted) ||
		    !get_int(o, "failed", 0, UINT_MAX, &n) ||
		    !YAJL_IS_ARRAY(procs)) {
			snprintf(why, whylen, "slot %lld: malformed", id);
			goto fail;
		}
		s->failed = (unsigned)n;
		if (get_int(o, "restarts", 0, UINT_MAX, &n))
			s->restarts = (unsigned)n;
		get_bool(o, "recycling", &s->recycling);
		get_bool(o, "backoff", &s->backoff);
		get_double(o, "due", &s->due);
		if ((last = get_str(o, "last_exit")) != NULL)
			snprintf(s->last_exit, sizeof(s->last_exit), "%s",
				 last);
		for (size_t k = 0; k < procs->u.array.len; k++) {
			yajl_val po = procs->u.array.values[k];
			const char *role = get_str(po, "role");
			struct fpool__proc **where =
				role == NULL		    ? NULL
				: strcmp(role, "cur") == 0  ? &s->cur
				: strcmp(role, "next") == 0 ? &s->next
				: strcmp(role, "old") == 0  ? &s->old
							    : NULL;

			if (where == NULL || *where != NULL) {
				snprintf(why, whylen,
					 "slot %lld: a process's role is "
					 "missing or twice",
					 id);
				goto fail;
			}
			if ((*where = adopt_proc(st, s, po, why, whylen)) ==
			    NULL)
				goto fail;
			(*nprocs)++;
		}
		if (s->backoff && (s->cur || s->next || s->old))
			s->backoff = false;
	}
	/* Good: the pool's slots (made from the new config, with no
	 * process yet) give way to the state's. */
	for (unsigned i = 0; i < pool->nslots; i++)
		fpool__slot_free(pool->slots[i]);
	free(pool->slots);
	pool->slots = v;
	pool->nslots = nslots;
	return true;
fail:
	/* The fds taken are the state's again (closed with it). */
	for (unsigned i = 0; i < nslots; i++) {
		struct fpool__slot *s = v[i];
		struct fpool__proc *ps[3] = { s ? s->cur : NULL,
					      s ? s->next : NULL,
					      s ? s->old : NULL };

		for (int k = 0; k < 3; k++) {
			int fds[4];

			if (ps[k] == NULL)
				continue;
			fds[0] = ps[k]->pidfd;
			fds[1] = ps[k]->chan;
			fds[2] = ps[k]->pipes[0].fd;
			fds[3] = ps[k]->pipes[1].fd;
			for (int f = 0; f < 4; f++) {
				ssize_t x =
					fds[f] >= 0 ? fd_index(st, fds[f]) : -1;

				if (x >= 0)
					st->used[x] = false;
			}
			ps[k]->pidfd = ps[k]->chan = -1;
			ps[k]->pipes[0].fd = ps[k]->pipes[1].fd = -1;
		}
		fpool__slot_free(s);
	}
	free(v);
	return false;
}

/* The activity memfd, mapped again in place of the fresh one. */
static void adopt_activity(struct fpool_pool *pool, struct fpool__state *st)
{
	yajl_val o = fpool__json_get(st->tree, "activity");
	struct fpool__shared *shm;
	long long fd;
	size_t len;

	if (!YAJL_IS_OBJECT(o) || !get_int(o, "fd", 0, INT_MAX, &fd) ||
	    !fd_is(st, (int)fd, FD_FILE))
		return;
	shm = fpool__activity_adopt((int)fd, &len);
	if (shm == NULL)
		return;
	fd_take(st, (int)fd);
	if (pool->shm != NULL && munmap(pool->shm, pool->shm_len) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "munmap of the fresh activity area");
	if (pool->shm_fd >= 0)
		close(pool->shm_fd);
	pool->shm = shm;
	pool->shm_len = len;
	pool->shm_fd = (int)fd;
	/* What a new worker is told too: it keeps its own page of this
	 * mapping and unmaps the rest (child.c), from its base. */
	pool->spawn.shm = shm;
	pool->spawn.shm_len = len;
	for (unsigned i = 0; i < pool->nslots; i++)
		if (pool->slots[i] != NULL)
			pool->slots[i]->shm = &shm[i];
}

/* Register the adopted processes' events and slot timers. */
static void adopt_events(struct fpool_pool *pool)
{
	double now = fpool__now();

	for (unsigned i = 0; i < pool->nslots; i++) {
		struct fpool__slot *s = pool->slots[i];
		struct fpool__proc *v[3];

		if (s == NULL)
			continue;
		v[0] = s->cur;
		v[1] = s->next;
		v[2] = s->old;
		for (int k = 0; k < 3; k++)
			if (v[k] != NULL)
				fpool__proc_adopt(
					v[k], pool->cfg.graceful_timeout -
						      (now - v[k]->stop_sent));
		if (s->backoff)
			fpool__slot_arm_backoff(s, s->due > now ? s->due - now
								: 0);
		fpool__slot_adopted(s);
	}
}

void fpool__upgrade_adopt_workers(struct fpool_pool *pool)
{
	struct fpool__upgrade *u = pool->upgrade;
	struct fpool__state *st = u->st;
	char why[256], result[512];
	const char *exe = u->exe != NULL ? u->exe : "?";
	unsigned nprocs = 0;
	bool fallback = st->fallback;
	sigset_t mask = st->mask;
	double started;
	bool ready;

	/* When the upgrade was asked for (the same clock, system-wide). */
	if (!get_double(st->tree, "began", &u->began))
		u->began = fpool__now();
	u->st = NULL;
	if (!fallback && !adopt_slots(pool, st, why, sizeof(why), &nprocs)) {
		fallback = true;
		snprintf(st->why, sizeof(st->why), "%s", why);
	}
	/* The workers' pages, once they are this image's workers (a fresh
	 * pool's would share entries with the old one's). */
	if (!fallback)
		adopt_activity(pool, st);
	if (!fallback) {
		if (get_double(st->tree, "started", &started))
			pool->started = started;
		if (get_bool(st->tree, "notified_ready", &ready))
			pool->notified_ready = ready;
		adopt_events(pool);
		fpool_log(FPOOL_LOG_INFO,
			  "upgrade: master pid %d now runs %s (forkpool %s, "
			  "was %s); adopted %zu listeners and %u processes",
			  (int)getpid(), exe, FPOOL_VERSION,
			  st->version ? st->version : "?", pool->nlisteners,
			  nprocs);
		/* The fds nobody took close with the state. */
		fpool__state_free(st);
	} else {
		/* The core only: the processes are the previous image's, to
		 * stop once the fresh pool is ready; until then what they
		 * hold of ours (channels, pipes) stays open. */
		fpool_log(FPOOL_LOG_WARNING,
			  "upgrade: master pid %d now runs %s, but cannot "
			  "read the state of the previous image (%s): keeping "
			  "its %zu listeners, starting fresh workers, and "
			  "stopping its %zu once they are ready",
			  (int)getpid(), exe, st->why, pool->nlisteners,
			  st->npids);
		/* Their exits are reaped as those of strays, named in the
		 * log (fpool__upgrade_reaped). */
		u->old_pids = st->pids;
		u->nold = st->npids;
		st->pids = NULL;
		st->npids = 0;
		u->old_st = st;
	}
	/* The signals blocked across execve(): the loop's signal events
	 * exist now, and what came meanwhile goes to them.  Before any
	 * fork: a worker starts with the mask it was forked with. */
	sigprocmask(SIG_SETMASK, &mask, NULL);
	/* What ended during the hand-over is seen now (its pidfd may be
	 * readable too: the reap then finds nothing more). */
	fpool__pool_reap(pool);
	if (!fallback) {
		/* This image read its config a moment ago (its start): the
		 * reload does not read it again, it replaces the workers. */
		int (*reconfigure)(struct fpool_pool *, void *) =
			pool->reconfigure;

		u->phase = UP_REPLACING;
		pool->reconfigure = NULL;
		if (fpool_pool_reload(pool) != 0) {
			/* Refused (logged: the module as it is now): the
			 * workers of the previous binary are recycled one
			 * by one instead. */
			fpool_log(FPOOL_LOG_WARNING,
				  "upgrade: the workers of the previous binary "
				  "are recycled one by one instead");
			u->phase = UP_IDLE;
		}
		pool->reconfigure = reconfigure;
	} else {
		fpool__pool_start_slots(pool);
	}
	snprintf(result, sizeof(result),
		 "{\"pid\":%d,\"version\":\"%s\",\"fallback\":%s,"
		 "\"workers\":%u}",
		 (int)getpid(), FPOOL_VERSION, fallback ? "true" : "false",
		 fpool_pool_size(pool));
	if (u->ctl)
		fpool__control_answer(pool, u->ctl_id, NULL, result);
	u->ctl = false;
}
