/*
 * Binary upgrade, the new image's side (upgrade.c is the running image's):
 * reading the state the previous image handed over and adopting it.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

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
		if (fd_index(st, fd) >= 0 || fpool__fd_cloexec(fd, true) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "upgrade: fd %d of the state is not open "
				  "(or named twice); ignored",
				  fd);
			continue;
		}
		st->fds[st->nfds++] = fd;
	}
	for (size_t i = 0; i < ls->u.array.len; i++) {
		struct fpool__st_listener *x = &st->listeners[st->nlisteners];
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
		if (fpool__parent_of((pid_t)YAJL_GET_INTEGER(x)) != getpid()) {
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
	fpool__fd_cloexec(fd, true);
	st = calloc(1, sizeof(*st));
	if (st == NULL || fstat(fd, &sb) < 0 || sb.st_size <= 0 ||
	    sb.st_size > FPOOL_STATE_MAX ||
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
	if ((bad = fpool_json_check(text, off, FPOOL_STATE_DEPTH,
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
	struct fpool__st_listener *x = &st->listeners[i];
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
	struct fpool__upgrade *u = fpool__upgrade_get(pool);

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
	return fpool__pool_take_pidfile(pool);
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
	/* An exec'd worker's notify socket (notifysock.c) is a datagram
	 * socket where a channel is a seqpacket one: it goes on being read
	 * as one, at the address the program was given. */
	if (p->chan >= 0) {
		int type = 0;
		socklen_t tl = sizeof(type);

		p->notify = getsockopt(p->chan, SOL_SOCKET, SO_TYPE, &type,
				       &tl) == 0 &&
			    type == SOCK_DGRAM;
	}
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
