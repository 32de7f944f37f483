/*
 * One worker slot seen from the master, and the worker processes in it:
 * forking, reading their channels, signalling them, noticing that one
 * hangs, and deciding what happens when one exits.
 *
 * A slot is a logical id (0..N-1) that survives respawns, as in
 * aioworkerpool.  It holds up to three processes:
 *   cur   its worker;
 *   next  the replacement a rolling reload started, until it is ready;
 *   old   the worker that replacement took over from, while it drains.
 * A process is STARTING until it says "ready", then READY, and STOPPING
 * once told to stop.  A slot with no worker is idle, or in backoff after
 * failed starts.  Every transition happens in this file.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

/* Packets read per channel callback, so one chatty worker cannot starve
 * the others. */
#define CHAN_BATCH 64

static void slot_timer_cb(evutil_socket_t fd, short what, void *arg);
static void proc_timer_cb(evutil_socket_t fd, short what, void *arg);

struct fpool__slot *fpool__slot_new(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->pool = pool;
	s->id = id;
	/* What the worker is doing, readable here even when it hangs. */
	s->shm = pool->shm != NULL ? &pool->shm[id] : NULL;
	fpool__ring_init(&s->ring, pool->cfg.output_lines);
	s->timer = evtimer_new(pool->base, slot_timer_cb, s);
	if (s->timer == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

/* Free a process record and what it holds, touching no process. */
static void proc_free(struct fpool__proc *p)
{
	if (p == NULL)
		return;
	if (p->held)
		fpool__msg_clear(&p->held_msg);
	if (p->chan_ev != NULL)
		event_free(p->chan_ev);
	if (p->pidfd_ev != NULL)
		event_free(p->pidfd_ev);
	if (p->timer != NULL)
		event_free(p->timer);
	if (p->chan >= 0)
		close(p->chan);
	if (p->pidfd >= 0)
		close(p->pidfd);
	fpool__pipe_close(&p->pipes[0]);
	fpool__pipe_close(&p->pipes[1]);
	free(p);
}

void fpool__slot_free(struct fpool__slot *s)
{
	if (s == NULL)
		return;
	proc_free(s->cur);
	proc_free(s->next);
	proc_free(s->old);
	if (s->timer != NULL)
		event_free(s->timer);
	fpool__ring_free(&s->ring);
	free(s);
}

void fpool__slot_activity(const struct fpool__slot *s, char *buf, size_t len)
{
	char raw[sizeof(s->shm->activity)];
	size_t n;
	char *clean;

	buf[0] = '\0';
	if (s->shm == NULL || len == 0)
		return;
	/* The worker may be writing it right now: copy, bound, clean. */
	memcpy(raw, s->shm->activity, sizeof(raw));
	raw[sizeof(raw) - 1] = '\0';
	clean = fpool__utf8_sanitize(raw, strlen(raw), false, &n);
	if (clean != NULL)
		snprintf(buf, len, "%s", clean);
	free(clean);
}

const char *fpool__proc_recycle_reason(struct fpool__proc *p, double now,
				       char *buf, size_t len)
{
	const struct fpool_config *cfg = &p->slot->pool->cfg;

	if (p->state != PROC_READY || now < p->recycle_after)
		return NULL;
	if (p->max_requests > 0 && p->requests >= p->max_requests) {
		snprintf(buf, len, "served %llu requests (its limit %llu)",
			 (unsigned long long)p->requests,
			 (unsigned long long)p->max_requests);
		return buf;
	}
	if (p->retire_at > 0 && now >= p->retire_at) {
		snprintf(buf, len, "lived %.1f s (its limit %.1f s)",
			 now - p->started, p->retire_at - p->started);
		return buf;
	}
	if (cfg->max_rss_mib > 0) {
		long kib = fpool__rss_kib(p->pid);

		if (kib > (long)cfg->max_rss_mib * 1024) {
			snprintf(buf, len,
				 "grew to %ld KiB RSS, over --max-rss %u MiB",
				 kib, cfg->max_rss_mib);
			return buf;
		}
	}
	return NULL;
}

const char *fpool__slot_state(const struct fpool__slot *s)
{
	if (s->cur != NULL)
		return s->cur->state == PROC_STARTING ? "starting"
		       : s->cur->state == PROC_READY  ? "ready"
						      : "stopping";
	if (s->backoff)
		return "backoff";
	return "idle";
}

unsigned fpool__slot_live(const struct fpool__slot *s)
{
	return (s->cur != NULL) + (s->next != NULL) + (s->old != NULL);
}

struct fpool__proc *fpool__slot_find(struct fpool__slot *s, pid_t pid)
{
	struct fpool__proc *v[3] = { s->cur, s->next, s->old };

	for (int i = 0; i < 3; i++)
		if (v[i] != NULL && v[i]->pid == pid)
			return v[i];
	return NULL;
}

/* The replacement of a rolling reload said "ready": it becomes the
 * slot's worker, and the one it replaces drains. */
static void promote(struct fpool__slot *s)
{
	struct fpool__proc *was = s->cur;

	s->cur = s->next;
	s->next = NULL;
	if (was != NULL) {
		s->old = was;
		fpool__proc_stop(was, true);
	}
	fpool__pool_replaced(s->pool, s);
}

static void proc_ready(struct fpool__proc *p)
{
	struct fpool__slot *s = p->slot;

	p->state = PROC_READY;
	p->ready_at = p->last_seen;
	fpool_log(FPOOL_LOG_INFO, "worker %u pid %d ready (%.3f ms after fork)",
		  s->id, (int)p->pid, (p->ready_at - p->started) * 1e3);
	if (p == s->next)
		promote(s);
	fpool__pool_worker_ready(s->pool);
}

/* Read up to CHAN_BATCH packets of p's channel; stop early when a sink
 * falls behind (`all`: read them anyway, the worker exited). */
/* Write a log record a worker sent. */
static void proc_log(struct fpool__proc *p, const struct fpool__msg *msg)
{
	struct fpool__record r = {
		.time = msg->time,
		.level = msg->level,
		.worker = (int)p->slot->id,
		.pid = p->pid,
		.msg = msg->text,
		.msglen = strlen(msg->text),
		.fields = msg->fields,
		.nfields = msg->nfields,
	};

	fpool__log_record(NULL, &r, false);
}

/* Write the record held back while a sink was behind, if any. */
static void proc_release_held(struct fpool__proc *p)
{
	if (!p->held) {
		return;
	}
	proc_log(p, &p->held_msg);
	fpool__msg_clear(&p->held_msg);
	p->held = false;
}

/*
 * Read up to CHAN_BATCH packets of p's channel.  While a sink is behind
 * (the pool's reading_paused), the first log record read is held back
 * and the channel is not read further until the sink catches up: the
 * worker then waits in its own send (back-pressure), while a "ready" or
 * a heartbeat sent before any record still gets through.  `all`: the
 * worker exited, read everything now.
 */
static void proc_chan_read(struct fpool__proc *p, bool all)
{
	/* The master is single-threaded: one buffer serves every process. */
	static char buf[FPOOL_CHAN_MAX + 1];
	struct fpool__slot *s = p->slot;
	struct fpool__msg msg;

	if (all)
		proc_release_held(p);
	for (int i = 0; i < CHAN_BATCH && p->chan >= 0 && !p->held; i++) {
		ssize_t n = recv(p->chan, buf, sizeof(buf), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* EOF: the worker closed its end, usually because it
			 * is exiting; its exit is seen through the pidfd or
			 * SIGCHLD.  Stop watching the channel either way. */
			if (n < 0)
				fpool__log_errno(FPOOL_LOG_WARNING, errno,
						 "worker %u pid %d: channel "
						 "read failed",
						 s->id, (int)p->pid);
			event_free(p->chan_ev);
			p->chan_ev = NULL;
			close(p->chan);
			p->chan = -1;
			return;
		}
		if (fpool__msg_decode(buf, (size_t)n, &msg) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d sent a malformed message "
				  "(%zd bytes); ignored",
				  s->id, (int)p->pid, n);
			continue;
		}
		p->last_seen = fpool__now();
		switch (msg.type) {
		case FPOOL_MSG_READY:
			if (p->state == PROC_STARTING)
				proc_ready(p);
			break;
		case FPOOL_MSG_HEARTBEAT:
			p->requests = msg.requests;
			if (p->max_requests > 0 &&
			    p->requests >= p->max_requests)
				fpool__pool_recycle(s->pool);
			break;
		case FPOOL_MSG_LOG:
			if (!all && s->pool->reading_paused) {
				p->held_msg = msg; /* freed when released */
				p->held = true;
				if (p->chan_ev != NULL)
					event_del(p->chan_ev);
				return;
			}
			proc_log(p, &msg);
			break;
		}
		fpool__msg_clear(&msg);
	}
}

static void proc_chan_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	proc_chan_read(arg, false);
	fpool__log_flush(); /* the records of this batch, in one write */
}

static void proc_pidfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__proc *p = arg;

	(void)fd;
	(void)what;
	fpool__pool_reap(p->slot->pool);
}

static void arm(struct event *ev, double seconds, unsigned id)
{
	struct timeval tv = fpool__tv(seconds);

	if (event_add(ev, &tv) != 0)
		fpool_log(FPOOL_LOG_ERROR,
			  "worker %u: cannot arm a timer; the check timer "
			  "will act instead",
			  id);
}

/* The stop deadline of a process passed. */
static void proc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__proc *p = arg;

	(void)fd;
	(void)what;
	if (p->state != PROC_STOPPING || p->killed)
		return;
	fpool_log(FPOOL_LOG_WARNING,
		  "worker %u pid %d did not stop within %.3g s, sending "
		  "SIGKILL",
		  p->slot->id, (int)p->pid,
		  p->slot->pool->cfg.graceful_timeout);
	p->killed = true;
	fpool__proc_signal(p, SIGKILL);
}

/* The backoff delay of a slot passed. */
static void slot_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__slot *s = arg;

	(void)fd;
	(void)what;
	if (s->backoff)
		fpool__slot_spawn(s);
}

/* Wait `delay` seconds before the slot's next start. */
static void slot_backoff(struct fpool__slot *s, double delay, const char *why)
{
	s->backoff = true;
	s->due = fpool__now() + delay;
	fpool_log(FPOOL_LOG_WARNING, "worker %u: %s; next start in %.3g s",
		  s->id, why, delay);
	arm(s->timer, delay, s->id);
}

static int pidfd_open(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	/* ENOSYS before Linux 5.3: exits are still seen through SIGCHLD,
	 * and kill() is still safe because only we reap our children. */
	if (fd < 0 && errno != ENOSYS)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "pidfd_open(%d) failed; using SIGCHLD and "
				 "kill()",
				 (int)pid);
	if (fd >= 0 && fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "fcntl(FD_CLOEXEC) on a pidfd");
	return fd;
}

/* Make a process record with its channel and output pipes; *child gets
 * the worker's ends (channel, stdout, stderr).  NULL on failure, logged. */
static struct fpool__proc *proc_new(struct fpool__slot *s, int child[3])
{
	static const char *const names[2] = { "stdout", "stderr" };
	struct fpool__proc *p = calloc(1, sizeof(*p));
	int sv[2], err;

	if (p == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "worker %u: out of memory", s->id);
		return NULL;
	}
	p->slot = s;
	p->pidfd = p->chan = -1;
	p->pipes[0].fd = p->pipes[1].fd = -1;
	child[0] = child[1] = child[2] = -1;
	p->timer = evtimer_new(s->pool->base, proc_timer_cb, p);
	if (p->timer == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "worker %u: out of memory", s->id);
		goto fail;
	}
	/* The master's end is non-blocking (the loop reads it); the
	 * worker's end blocks, and heartbeats use MSG_DONTWAIT. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno,
				 "worker %u: socketpair failed", s->id);
		goto fail;
	}
	p->chan = sv[0];
	child[0] = sv[1];
	if (fcntl(p->chan, F_SETFL, O_NONBLOCK) < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, errno,
				 "worker %u: fcntl(O_NONBLOCK) failed", s->id);
		goto fail;
	}
	for (int i = 0; i < 2; i++) {
		err = fpool__pipe_open(&p->pipes[i], p, names[i],
				       &child[i + 1]);
		if (err != 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, -err,
					 "worker %u: cannot make a pipe for "
					 "its %s",
					 s->id, names[i]);
			goto fail;
		}
	}
	return p;
fail:
	for (int i = 0; i < 3; i++)
		if (child[i] >= 0)
			close(child[i]);
	proc_free(p);
	return NULL;
}

/* Fork a worker process for slot s.  NULL on failure, logged. */
static struct fpool__proc *proc_spawn(struct fpool__slot *s)
{
	struct fpool_pool *pool = s->pool;
	struct fpool__proc *p;
	sigset_t all, old;
	int child[3], err;
	pid_t pid;

	p = proc_new(s, child);
	if (p == NULL)
		return NULL;
	if (s->shm != NULL)
		memset(s->shm, 0, sizeof(*s->shm));
	/* Each worker draws its own limits, so that workers started
	 * together do not all retire together.  Drawn before fork() so the
	 * worker knows its request limit too, and says so when it gets
	 * there. */
	if (pool->cfg.max_requests > 0)
		p->max_requests =
			pool->cfg.max_requests +
			(pool->cfg.max_requests_jitter > 0
				 ? (uint64_t)random() %
					   (pool->cfg.max_requests_jitter + 1)
				 : 0);
	s->spawn_max_requests = p->max_requests;
	/* Block every signal across fork(): libevent's handler writes to a
	 * socketpair the new child shares with us until it rebuilds its own
	 * loop, so a signal caught there would wake the master instead. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pool->saved_mask = old;
	pid = fork();
	if (pid == 0)
		fpool__worker_run(pool, s, child);
	err = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	for (int i = 0; i < 3; i++)
		close(child[i]);
	if (pid < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, err, "worker %u: fork failed",
				 s->id);
		proc_free(p);
		return NULL;
	}

	p->pid = pid;
	p->state = PROC_STARTING;
	p->started = p->last_seen = fpool__now();
	if (pool->cfg.max_lifetime > 0)
		p->retire_at = p->started +
			       pool->cfg.max_lifetime *
				       (1 + 0.1 * random() / (double)RAND_MAX);
	p->pidfd = pidfd_open(pid);
	p->chan_ev = event_new(pool->base, p->chan, EV_READ | EV_PERSIST,
			       proc_chan_cb, p);
	if (p->chan_ev == NULL || event_add(p->chan_ev, NULL) != 0)
		fpool_log(FPOOL_LOG_ERROR,
			  "worker %u pid %d: cannot watch its channel; it will "
			  "be seen as hung",
			  s->id, (int)pid);
	if (p->pidfd >= 0) {
		p->pidfd_ev = event_new(pool->base, p->pidfd, EV_READ,
					proc_pidfd_cb, p);
		if (p->pidfd_ev == NULL || event_add(p->pidfd_ev, NULL) != 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d: cannot watch its pidfd; "
				  "relying on SIGCHLD",
				  s->id, (int)pid);
	}
	for (int i = 0; i < 2; i++)
		if (fpool__pipe_watch(&p->pipes[i], pool->base,
				      !pool->reading_paused) != 0)
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d: cannot watch its %s; it "
				  "will block once the pipe is full",
				  s->id, (int)pid, p->pipes[i].stream);
	if (s->restarts > 0)
		fpool_log(FPOOL_LOG_INFO,
			  "worker %u pid %d started (respawn %u)", s->id,
			  (int)pid, s->restarts);
	else
		fpool_log(FPOOL_LOG_INFO, "worker %u pid %d started", s->id,
			  (int)pid);
	s->restarts++;
	return p;
}

int fpool__slot_spawn(struct fpool__slot *s)
{
	if (s->cur != NULL)
		return -EEXIST;
	s->backoff = false;
	event_del(s->timer);
	s->cur = proc_spawn(s);
	if (s->cur == NULL) {
		slot_backoff(s, 1.0, "cannot start a worker");
		return -EAGAIN;
	}
	return 0;
}

int fpool__slot_replace(struct fpool__slot *s)
{
	if (s->cur == NULL || s->next != NULL || s->old != NULL)
		return -EBUSY;
	s->next = proc_spawn(s);
	return s->next != NULL ? 0 : -EAGAIN;
}

int fpool__proc_signal(struct fpool__proc *p, int sig)
{
	int r;

	if (p->pid <= 0)
		return -ESRCH;
	/* Through the pidfd the signal can never reach a recycled pid.
	 * kill() is the fallback; it is safe too as long as we are the only
	 * one reaping our children, which we are. */
	if (p->pidfd >= 0)
		r = (int)syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
	else
		r = kill(p->pid, sig);
	if (r < 0) {
		r = -errno;
		/* ESRCH: it already exited and waits to be reaped. */
		fpool__log_errno(r == -ESRCH ? FPOOL_LOG_DEBUG
					     : FPOOL_LOG_WARNING,
				 -r, "worker %u pid %d: sending %s failed",
				 p->slot->id, (int)p->pid, fpool__signame(sig));
		return r;
	}
	return 0;
}

void fpool__proc_stop(struct fpool__proc *p, bool graceful)
{
	/* An interrupt may follow a graceful stop (an impatient operator):
	 * forward it, but keep the first deadline. */
	if (p->state == PROC_STOPPING && graceful)
		return;
	fpool__proc_signal(p, graceful ? SIGTERM : SIGINT);
	if (p->state != PROC_STOPPING) {
		p->state = PROC_STOPPING;
		p->stop_sent = fpool__now();
		arm(p->timer, p->slot->pool->cfg.graceful_timeout, p->slot->id);
	}
}

void fpool__slot_stop(struct fpool__slot *s, bool graceful)
{
	if (s->backoff) {
		event_del(s->timer);
		s->backoff = false;
	}
	if (s->cur != NULL)
		fpool__proc_stop(s->cur, graceful);
	if (s->next != NULL)
		fpool__proc_stop(s->next, graceful);
	if (s->old != NULL)
		fpool__proc_stop(s->old, graceful);
}

static void proc_check(struct fpool__proc *p, double now)
{
	struct fpool__slot *s = p->slot;
	char activity[sizeof(s->shm->activity)];
	double age;

	if (p->killed)
		return;
	if (p->state == PROC_STOPPING) {
		/* Normally the process's own timer fires first; this is the
		 * safety net should arming it have failed. */
		if (now - p->stop_sent > s->pool->cfg.graceful_timeout + 1)
			proc_timer_cb(-1, 0, p);
		return;
	}
	/* While the master does not read the channels (a sink is behind),
	 * the heartbeats wait there: nothing to judge. */
	if (s->pool->reading_paused)
		return;
	/* Judge what the worker sent, not what we have not read yet. */
	if (now - p->last_seen > s->pool->cfg.worker_timeout &&
	    p->chan_ev != NULL) {
		proc_chan_read(p, false);
		fpool__log_flush();
	}
	age = now - p->last_seen;
	if (age <= s->pool->cfg.worker_timeout)
		return;
	fpool__slot_activity(s, activity, sizeof(activity));
	fpool_log(FPOOL_LOG_WARNING,
		  "worker %u pid %d hung: no heartbeat for %.1f s "
		  "(--worker-timeout %.3g s); it last reported %llu requests%s"
		  "%s%s, sending SIGKILL",
		  s->id, (int)p->pid, age, s->pool->cfg.worker_timeout,
		  (unsigned long long)p->requests,
		  activity[0] ? " and was busy with \"" : "", activity,
		  activity[0] ? "\"" : "");
	p->killed = true;
	fpool__proc_signal(p, SIGKILL);
}

void fpool__slot_credit(struct fpool__slot *s, double seconds, double now)
{
	struct fpool__proc *v[3] = { s->cur, s->next, s->old };

	for (int i = 0; i < 3; i++) {
		if (v[i] == NULL)
			continue;
		v[i]->last_seen += seconds;
		if (v[i]->last_seen > now)
			v[i]->last_seen = now;
	}
}

void fpool__slot_reading(struct fpool__slot *s, bool on)
{
	struct fpool__proc *v[3] = { s->cur, s->next, s->old };

	for (int i = 0; i < 3; i++) {
		struct fpool__proc *p = v[i];

		if (p == NULL)
			continue;
		/* A channel stops itself at its first log record (see
		 * proc_chan_read); it is read again once that is written. */
		if (on && p->held) {
			proc_release_held(p);
			if (p->chan_ev != NULL &&
			    event_add(p->chan_ev, NULL) != 0)
				fpool_log(FPOOL_LOG_ERROR,
					  "worker %u pid %d: cannot watch its "
					  "channel again",
					  s->id, (int)p->pid);
		}
		fpool__pipe_reading(&p->pipes[0], on);
		fpool__pipe_reading(&p->pipes[1], on);
	}
}

void fpool__slot_check(struct fpool__slot *s, double now)
{
	/* Safety net should the backoff timer not have fired. */
	if (s->backoff && now > s->due + 1)
		fpool__slot_spawn(s);
	if (s->cur != NULL)
		proc_check(s->cur, now);
	if (s->next != NULL)
		proc_check(s->next, now);
	if (s->old != NULL)
		proc_check(s->old, now);
}

void fpool__slot_exited(struct fpool__slot *s, struct fpool__proc *p,
			int status)
{
	struct fpool_pool *pool = s->pool;
	double now = fpool__now(), delay;
	bool failed_start, stopping = p->state == PROC_STOPPING;
	char why[96];

	/* Read what the worker sent and printed before it died (a late
	 * "ready", its last records and lines) before saying it died. */
	if (p->chan_ev != NULL)
		proc_chan_read(p, true);
	fpool__pipe_drain(&p->pipes[0]);
	fpool__pipe_drain(&p->pipes[1]);
	fpool__describe_status(status, s->last_exit, sizeof(s->last_exit));
	fpool_log(stopping || (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			  ? FPOOL_LOG_INFO
			  : FPOOL_LOG_WARNING,
		  "worker %u pid %d %s after %.3f s%s", s->id, (int)p->pid,
		  s->last_exit, now - p->started,
		  p->ready_at == 0 ? ", before ready" : "");
	/* A late "ready" may have promoted p from next to cur just now. */
	if (p == s->old) {
		s->old = NULL;
		proc_free(p);
		fpool__pool_slot_idle(pool);
		return;
	}
	if (p == s->next) {
		s->next = NULL;
		proc_free(p);
		fpool__pool_replace_failed(pool, s);
		/* The worker it was to replace may be gone meanwhile. */
		if (s->cur == NULL && s->wanted && pool->state == POOL_RUNNING)
			fpool__slot_spawn(s);
		fpool__pool_slot_idle(pool);
		return;
	}
	s->cur = NULL;
	if (s->next != NULL) {
		/* Its replacement is on the way and takes the slot when
		 * ready: forking a third process now would only be
		 * drained. */
		proc_free(p);
		fpool__pool_slot_idle(pool);
		return;
	}
	/* A worker stopped on purpose (kill, recycle) is not a failure. */
	failed_start = !stopping && (p->ready_at == 0 ||
				     now - p->ready_at < pool->cfg.min_uptime);
	proc_free(p);
	if (!s->wanted || pool->state != POOL_RUNNING) {
		fpool__pool_slot_idle(pool);
		return;
	}
	s->failed = failed_start ? s->failed + 1 : 0;
	if (failed_start) {
		/* It may be the one too many: then the pool stops. */
		fpool__pool_failed_start(pool);
		if (pool->state != POOL_RUNNING) {
			fpool__pool_slot_idle(pool);
			return;
		}
	}
	delay = fpool__backoff_delay(s->failed);
	if (delay > 0) {
		snprintf(why, sizeof(why), "%u failed starts in a row",
			 s->failed);
		slot_backoff(s, delay, why);
		return;
	}
	fpool__slot_spawn(s);
}
