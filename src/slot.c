/*
 * One worker slot seen from the master: forking a worker into it, reading
 * its channel, signalling it, noticing that it hangs, and deciding what
 * happens when its process exits.
 *
 * A slot is a logical id (0..N-1) that survives respawns, as in
 * aioworkerpool.  Its states are listed in fpool-int.h; every transition
 * happens in this file:
 *
 *   IDLE/BACKOFF --spawn--> STARTING --"ready"--> READY
 *   STARTING/READY --stop--> STOPPING
 *   any live state --exit--> STARTING (respawn now) | BACKOFF | IDLE
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

struct fpool__slot *fpool__slot_new(struct fpool_pool *pool, unsigned id)
{
	struct fpool__slot *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->pool = pool;
	s->id = id;
	s->state = SLOT_IDLE;
	s->pidfd = -1;
	s->chan = -1;
	s->pipes[0].fd = s->pipes[1].fd = -1;
	s->timer = evtimer_new(pool->base, slot_timer_cb, s);
	if (s->timer == NULL ||
	    fpool__ring_init(&s->ring, pool->cfg.output_lines) != 0) {
		if (s->timer != NULL)
			event_free(s->timer);
		free(s);
		return NULL;
	}
	return s;
}

/* Drop the per-process resources of the slot: channel, pidfd, events. */
static void slot_release(struct fpool__slot *s)
{
	if (s->chan_ev != NULL) {
		event_free(s->chan_ev);
		s->chan_ev = NULL;
	}
	if (s->pidfd_ev != NULL) {
		event_free(s->pidfd_ev);
		s->pidfd_ev = NULL;
	}
	if (s->chan >= 0) {
		close(s->chan);
		s->chan = -1;
	}
	if (s->pidfd >= 0) {
		close(s->pidfd);
		s->pidfd = -1;
	}
	fpool__pipe_close(&s->pipes[0]);
	fpool__pipe_close(&s->pipes[1]);
}

void fpool__slot_forget(struct fpool__slot *s)
{
	if (s == NULL)
		return;
	slot_release(s);
	if (s->timer != NULL)
		event_free(s->timer);
	fpool__ring_free(&s->ring);
	free(s);
}

void fpool__slot_free(struct fpool__slot *s)
{
	fpool__slot_forget(s);
}

static void slot_chan_read(evutil_socket_t fd, void *arg)
{
	struct fpool__slot *s = arg;
	/* The master is single-threaded: one buffer serves every slot. */
	static char buf[FPOOL_CHAN_MAX + 1];
	struct fpool__msg msg;

	for (int i = 0; i < CHAN_BATCH; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

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
						 s->id, (int)s->pid);
			event_free(s->chan_ev);
			s->chan_ev = NULL;
			close(s->chan);
			s->chan = -1;
			return;
		}
		if (fpool__msg_decode(buf, (size_t)n, &msg) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d sent a malformed message "
				  "(%zd bytes); ignored",
				  s->id, (int)s->pid, n);
			continue;
		}
		s->last_seen = fpool__now();
		switch (msg.type) {
		case FPOOL_MSG_READY:
			if (s->state != SLOT_STARTING)
				break;
			s->state = SLOT_READY;
			s->ready_at = s->last_seen;
			fpool_log(FPOOL_LOG_INFO,
				  "worker %u pid %d ready (%.3f ms after fork)",
				  s->id, (int)s->pid,
				  (s->ready_at - s->started) * 1e3);
			break;
		case FPOOL_MSG_HEARTBEAT:
			s->requests = msg.requests;
			break;
		case FPOOL_MSG_LOG: {
			struct fpool__record r = {
				.time = msg.time,
				.level = msg.level,
				.worker = (int)s->id,
				.pid = s->pid,
				.msg = msg.text,
				.msglen = strlen(msg.text),
				.fields = msg.fields,
				.nfields = msg.nfields,
			};

			fpool__log_record(-1, &r, false);
			break;
		}
		}
		fpool__msg_clear(&msg);
	}
}

static void slot_chan_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	slot_chan_read(fd, arg);
	fpool__log_flush(); /* the records of this batch, in one write */
}

static void slot_pidfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__slot *s = arg;

	(void)fd;
	(void)what;
	fpool__pool_reap(s->pool);
}

static void slot_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__slot *s = arg;

	(void)fd;
	(void)what;
	if (s->state == SLOT_BACKOFF) {
		fpool__slot_spawn(s);
	} else if (s->state == SLOT_STOPPING && !s->killed) {
		fpool_log(FPOOL_LOG_WARNING,
			  "worker %u pid %d did not stop within %.3g s, "
			  "sending SIGKILL",
			  s->id, (int)s->pid, s->pool->cfg.graceful_timeout);
		s->killed = true;
		fpool__slot_signal(s, SIGKILL);
	}
}

static void slot_arm_timer(struct fpool__slot *s, double seconds)
{
	struct timeval tv = fpool__tv(seconds);

	if (event_add(s->timer, &tv) != 0)
		fpool_log(FPOOL_LOG_ERROR,
			  "worker %u: cannot arm its timer; the check timer "
			  "will act instead",
			  s->id);
}

/* Put the slot in backoff for `delay` seconds before its next start. */
static void slot_backoff(struct fpool__slot *s, double delay, const char *why)
{
	s->state = SLOT_BACKOFF;
	s->due = fpool__now() + delay;
	fpool_log(FPOOL_LOG_WARNING, "worker %u: %s; next start in %.3g s",
		  s->id, why, delay);
	slot_arm_timer(s, delay);
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

int fpool__slot_spawn(struct fpool__slot *s)
{
	static const char *const names[2] = { "stdout", "stderr" };
	struct fpool_pool *pool = s->pool;
	sigset_t all, old;
	int sv[2], out[2], err;
	pid_t pid;

	/* The master's end is non-blocking (the loop reads it); the
	 * worker's end blocks, and heartbeats use MSG_DONTWAIT. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		err = errno;
		fpool__log_errno(FPOOL_LOG_ERROR, err,
				 "worker %u: socketpair failed", s->id);
		slot_backoff(s, 1.0, "cannot create its channel");
		return -err;
	}
	if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
		err = errno;
		fpool__log_errno(FPOOL_LOG_ERROR, err,
				 "worker %u: fcntl(O_NONBLOCK) failed", s->id);
		close(sv[0]);
		close(sv[1]);
		slot_backoff(s, 1.0, "cannot set up its channel");
		return -err;
	}

	for (int i = 0; i < 2; i++) {
		err = fpool__pipe_open(&s->pipes[i], s, names[i], &out[i]);
		if (err != 0) {
			fpool__log_errno(
				FPOOL_LOG_ERROR, -err,
				"worker %u: cannot make a pipe for its "
				"%s",
				s->id, names[i]);
			if (i == 1) {
				fpool__pipe_close(&s->pipes[0]);
				close(out[0]);
			}
			close(sv[0]);
			close(sv[1]);
			slot_backoff(s, 1.0, "cannot capture its output");
			return err;
		}
	}

	/* Block every signal across fork(): libevent's handler writes to a
	 * socketpair the new child shares with us until it rebuilds its own
	 * loop, so a signal caught there would wake the master instead. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pool->saved_mask = old;
	pid = fork();
	if (pid == 0)
		fpool__worker_run(pool, s, sv[1], out);
	err = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(sv[1]);
	close(out[0]);
	close(out[1]);
	if (pid < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, err, "worker %u: fork failed",
				 s->id);
		close(sv[0]);
		fpool__pipe_close(&s->pipes[0]);
		fpool__pipe_close(&s->pipes[1]);
		slot_backoff(s, 1.0, "fork failed");
		return -err;
	}

	if (s->ready_at != 0 || s->started != 0)
		s->restarts++;
	s->pid = pid;
	s->chan = sv[0];
	s->started = s->last_seen = fpool__now();
	s->ready_at = 0;
	s->stop_sent = 0;
	s->killed = false;
	s->requests = 0;
	s->state = SLOT_STARTING;
	s->pidfd = pidfd_open(pid);

	s->chan_ev = event_new(pool->base, s->chan, EV_READ | EV_PERSIST,
			       slot_chan_cb, s);
	if (s->chan_ev == NULL || event_add(s->chan_ev, NULL) != 0)
		fpool_log(FPOOL_LOG_ERROR,
			  "worker %u pid %d: cannot watch its channel; it will "
			  "be seen as hung",
			  s->id, (int)pid);
	if (s->pidfd >= 0) {
		s->pidfd_ev = event_new(pool->base, s->pidfd, EV_READ,
					slot_pidfd_cb, s);
		if (s->pidfd_ev == NULL || event_add(s->pidfd_ev, NULL) != 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d: cannot watch its pidfd; "
				  "relying on SIGCHLD",
				  s->id, (int)pid);
	}
	for (int i = 0; i < 2; i++)
		if (fpool__pipe_watch(&s->pipes[i], pool->base) != 0)
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d: cannot watch its %s; it "
				  "will block once the pipe is full",
				  s->id, (int)pid, names[i]);
	if (s->restarts > 0)
		fpool_log(FPOOL_LOG_INFO, "worker %u pid %d started (respawn %u)",
			  s->id, (int)pid, s->restarts);
	else
		fpool_log(FPOOL_LOG_INFO, "worker %u pid %d started", s->id,
			  (int)pid);
	return 0;
}

int fpool__slot_signal(struct fpool__slot *s, int sig)
{
	int r;

	if (s->pid <= 0)
		return -ESRCH;
	/* Through the pidfd the signal can never reach a recycled pid.
	 * kill() is the fallback; it is safe too as long as we are the only
	 * one reaping our children, which we are. */
	if (s->pidfd >= 0)
		r = (int)syscall(SYS_pidfd_send_signal, s->pidfd, sig, NULL, 0);
	else
		r = kill(s->pid, sig);
	if (r < 0) {
		r = -errno;
		/* ESRCH: it already exited and waits to be reaped. */
		fpool__log_errno(r == -ESRCH ? FPOOL_LOG_DEBUG
					     : FPOOL_LOG_WARNING,
				 -r, "worker %u pid %d: sending %s failed",
				 s->id, (int)s->pid, fpool__signame(sig));
		return r;
	}
	return 0;
}

void fpool__slot_stop(struct fpool__slot *s, bool graceful)
{
	if (s->state == SLOT_BACKOFF) {
		event_del(s->timer);
		s->state = SLOT_IDLE;
		return;
	}
	if (s->pid <= 0)
		return;
	/* An interrupt may follow a graceful stop (an impatient operator):
	 * forward it, but keep the first deadline. */
	if (s->state == SLOT_STOPPING && graceful)
		return;
	fpool__slot_signal(s, graceful ? SIGTERM : SIGINT);
	if (s->state != SLOT_STOPPING) {
		s->state = SLOT_STOPPING;
		s->stop_sent = fpool__now();
		slot_arm_timer(s, s->pool->cfg.graceful_timeout);
	}
}

void fpool__slot_check(struct fpool__slot *s, double now)
{
	double age;

	if (s->state == SLOT_BACKOFF) {
		/* Safety net should the slot's timer not have fired. */
		if (now > s->due + 1)
			fpool__slot_spawn(s);
		return;
	}
	if (s->pid <= 0 || s->killed)
		return;
	if (s->state == SLOT_STOPPING) {
		/* Normally the slot's own timer fires first; this is the
		 * safety net should arming it have failed. */
		if (now - s->stop_sent > s->pool->cfg.graceful_timeout + 1)
			slot_timer_cb(-1, 0, s);
		return;
	}
	age = now - s->last_seen;
	if (age <= s->pool->cfg.worker_timeout)
		return;
	fpool_log(FPOOL_LOG_WARNING,
		  "worker %u pid %d hung: no heartbeat for %.1f s "
		  "(--worker-timeout %.3g s), sending SIGKILL",
		  s->id, (int)s->pid, age, s->pool->cfg.worker_timeout);
	s->killed = true;
	fpool__slot_signal(s, SIGKILL);
}

void fpool__slot_exited(struct fpool__slot *s, int status)
{
	struct fpool_pool *pool = s->pool;
	double now = fpool__now(), delay;
	bool failed_start, stopping = s->state == SLOT_STOPPING;
	char how[96];

	/* Read what the worker sent and printed before it died (a late
	 * "ready", its last records and lines) before saying it died. */
	if (s->chan_ev != NULL)
		slot_chan_cb(s->chan, EV_READ, s);
	fpool__pipe_drain(&s->pipes[0]);
	fpool__pipe_drain(&s->pipes[1]);
	fpool__describe_status(status, how, sizeof(how));
	fpool_log(stopping || (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			  ? FPOOL_LOG_INFO
			  : FPOOL_LOG_WARNING,
		  "worker %u pid %d %s after %.3f s%s", s->id, (int)s->pid, how,
		  now - s->started, s->ready_at == 0 ? ", before ready" : "");

	slot_release(s);
	event_del(s->timer);
	s->pid = 0;

	if (!s->wanted || pool->state != POOL_RUNNING) {
		s->state = SLOT_IDLE;
		fpool__pool_slot_idle(pool);
		return;
	}
	/* A worker stopped on purpose (kill, recycle) is not a failure. */
	failed_start = !stopping && (s->ready_at == 0 ||
				     now - s->ready_at < pool->cfg.min_uptime);
	s->failed = failed_start ? s->failed + 1 : 0;
	delay = fpool__backoff_delay(s->failed);
	if (delay > 0) {
		char why[96];

		snprintf(why, sizeof(why), "%u failed starts in a row",
			 s->failed);
		slot_backoff(s, delay, why);
		return;
	}
	fpool__slot_spawn(s);
}
