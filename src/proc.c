/*
 * Worker processes as the master sees them: forking one (through a spawn
 * context, so the child sees nothing of the master), its channel, output
 * pipes and pidfd on the master's loop, signalling it, its stop deadline,
 * reading what it left when it exited.  What the processes do is told to
 * the pool through pool->proc_event (supervise.c); what that means for
 * the slot is decided by the state table (slot.c).  This file decides
 * nothing.
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

void fpool__proc_free(struct fpool__proc *p)
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
	if (p->exec_ev != NULL)
		event_free(p->exec_ev);
	if (p->exec_err >= 0)
		close(p->exec_err);
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
	fpool__proc_free(s->cur);
	fpool__proc_free(s->next);
	fpool__proc_free(s->old);
	if (s->timer != NULL)
		event_free(s->timer);
	fpool__ring_free(&s->ring);
	free(s);
}

void fpool__slot_activity(const struct fpool__slot *s, char *buf, size_t len)
{
	fpool__activity_read(s->shm, buf, len);
}

const char *fpool__proc_recycle_reason(struct fpool__proc *p, double now,
				       char *buf, size_t len)
{
	const struct fpool_config *cfg = &p->slot->pool->cfg;

	if (p->state != PROC_READY || now < p->recycle_after)
		return NULL;
	/* One the upgrade's reload could not replace (it was not ready
	 * then): it runs the code of the binary before. */
	if (p->inherited && !fpool__upgrade_busy(p->slot->pool)) {
		snprintf(buf, len, "runs the binary from before the upgrade");
		return buf;
	}
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
	static char buf[FPOOL_MESSAGE_MAX + 2];
	struct fpool__slot *s = p->slot;
	struct fpool__msg msg;

	if (p->notify) {
		fpool__notify_read(p, all);
		return;
	}
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
		if (buf[0] == FPOOL_CHAN_MESSAGE) {
			/* A longer packet was cut to the buffer. */
			if ((size_t)n > FPOOL_MESSAGE_MAX + 1) {
				fpool_log(
					FPOOL_LOG_WARNING,
					"worker %u pid %d sent a message over "
					"%d bytes; ignored",
					s->id, (int)p->pid, FPOOL_MESSAGE_MAX);
				continue;
			}
			p->last_seen = fpool__now();
			fpool__message_received(s->pool, s->id, buf + 1,
						(size_t)n - 1);
			/* The callback may have stopped the pool and
			 * closed this channel. */
			continue;
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
			s->pool->proc_event(s->pool, s, p, PEV_READY);
			break;
		case FPOOL_MSG_HEARTBEAT:
			p->requests = msg.requests;
			s->pool->proc_event(s->pool, s, p, PEV_HEARTBEAT);
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

/*
 * -k exec: read the child's close-on-exec error pipe.  What it holds is
 * why the program could not be started (the child then exits as a failed
 * start); EOF with nothing is execve() succeeding, which is "ready" for
 * --exec-type exec.
 */
static void proc_exec_read(struct fpool__proc *p)
{
	struct fpool__slot *s = p->slot;

	while (p->exec_err >= 0) {
		size_t room = sizeof(p->exec_why) - 1 - p->exec_whylen;
		char sink[64];
		ssize_t n = room > 0 ? read(p->exec_err,
					    p->exec_why + p->exec_whylen, room)
				     : read(p->exec_err, sink, sizeof(sink));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n > 0) {
			if (room > 0)
				p->exec_whylen += (size_t)n;
			continue;
		}
		if (n < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "worker %u pid %d: reading its exec "
					 "pipe",
					 s->id, (int)p->pid);
		event_free(p->exec_ev);
		p->exec_ev = NULL;
		close(p->exec_err);
		p->exec_err = -1;
		if (p->exec_whylen > 0) {
			p->exec_why[p->exec_whylen] = '\0';
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d failed to start: %s", s->id,
				  (int)p->pid, p->exec_why);
		} else if (n == 0 && !p->notify && p->state == PROC_STARTING) {
			s->pool->proc_event(s->pool, s, p, PEV_READY);
		}
		return;
	}
}

static void proc_exec_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	proc_exec_read(arg);
	fpool__log_flush();
}

static void proc_pidfd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__proc *p = arg;

	(void)fd;
	(void)what;
	p->slot->pool->proc_event(p->slot->pool, p->slot, p, PEV_EXITED);
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
	p->slot->pool->proc_event(p->slot->pool, p->slot, p, PEV_DEADLINE);
}

void fpool__proc_arm_deadline(struct fpool__proc *p)
{
	p->stop_sent = fpool__now();
	arm(p->timer, p->slot->pool->cfg.graceful_timeout, p->slot->id);
}

/* The backoff delay of a slot passed. */
static void slot_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__slot *s = arg;

	(void)fd;
	(void)what;
	s->pool->proc_event(s->pool, s, NULL, PEV_DUE);
}

void fpool__slot_arm_backoff(struct fpool__slot *s, double delay)
{
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

/* Watch p's channel, pidfd and output pipes from the pool's loop; what
 * cannot be watched is logged (the check timer and SIGCHLD make up for
 * it).  For a new worker, and for one handed over by a binary upgrade. */
static void proc_watch(struct fpool__proc *p)
{
	struct fpool__slot *s = p->slot;
	struct fpool_pool *pool = s->pool;

	if (p->chan >= 0) {
		p->chan_ev = event_new(pool->base, p->chan,
				       EV_READ | EV_PERSIST, proc_chan_cb, p);
		if (p->chan_ev == NULL || event_add(p->chan_ev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d: cannot watch its "
				  "channel; it will be seen as hung",
				  s->id, (int)p->pid);
		}
	}
	if (p->exec_err >= 0) {
		p->exec_ev = event_new(pool->base, p->exec_err,
				       EV_READ | EV_PERSIST, proc_exec_cb, p);
		if (p->exec_ev == NULL || event_add(p->exec_ev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d: cannot watch its exec "
				  "pipe; it will not be seen as ready",
				  s->id, (int)p->pid);
		}
	}
	if (p->pidfd >= 0) {
		p->pidfd_ev = event_new(pool->base, p->pidfd, EV_READ,
					proc_pidfd_cb, p);
		if (p->pidfd_ev == NULL || event_add(p->pidfd_ev, NULL) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d: cannot watch its pidfd; "
				  "relying on SIGCHLD",
				  s->id, (int)p->pid);
		}
	}
	for (int i = 0; i < 2; i++) {
		if (p->pipes[i].fd < 0)
			continue;
		if (fpool__pipe_watch(&p->pipes[i], pool->base,
				      !pool->reading_paused) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "worker %u pid %d: cannot watch its %s; it "
				  "will block once the pipe is full",
				  s->id, (int)p->pid, p->pipes[i].stream);
		}
	}
}

/* Make a process record with its channel and output pipes; *child gets
 * the worker's ends (channel, stdout, stderr, -k exec's error pipe; -1
 * where there is none) and addr an exec'd worker's NOTIFY_SOCKET (or "").
 * NULL on failure, logged. */
static struct fpool__proc *proc_new(struct fpool__slot *s, int child[4],
				    char *addr, size_t addrlen)
{
	static const char *const names[2] = { "stdout", "stderr" };
	struct fpool__proc *p = calloc(1, sizeof(*p));
	int sv[2], err;

	if (p == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "worker %u: out of memory", s->id);
		return NULL;
	}
	p->slot = s;
	p->pidfd = p->chan = p->exec_err = -1;
	p->pipes[0].fd = p->pipes[1].fd = -1;
	child[0] = child[1] = child[2] = child[3] = -1;
	addr[0] = '\0';
	p->timer = evtimer_new(s->pool->base, proc_timer_cb, p);
	if (p->timer == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "worker %u: out of memory", s->id);
		goto fail;
	}
	if (s->pool->cfg.exec_program != NULL) {
		int fds[2];

		/* An exec'd program has no channel: its notify socket (if
		 * any) stands for it, and the error pipe tells how its
		 * execve() went. */
		if (pipe2(fds, O_CLOEXEC) < 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, errno,
					 "worker %u: cannot make its exec pipe",
					 s->id);
			goto fail;
		}
		p->exec_err = fds[0];
		child[3] = fds[1];
		if (fcntl(p->exec_err, F_SETFL, O_NONBLOCK) < 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, errno,
					 "worker %u: fcntl(O_NONBLOCK) failed",
					 s->id);
			goto fail;
		}
		if (s->pool->cfg.exec_notify) {
			int fd = fpool__notify_open(p, addr, addrlen);

			if (fd < 0) {
				fpool__log_errno(FPOOL_LOG_ERROR, -fd,
						 "worker %u: cannot make its "
						 "notify socket",
						 s->id);
				goto fail;
			}
			p->chan = fd;
			p->notify = true;
		}
		goto pipes;
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
pipes:
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
	for (int i = 0; i < 4; i++)
		if (child[i] >= 0)
			close(child[i]);
	fpool__proc_free(p);
	return NULL;
}

/* Fork a worker process for slot s.  NULL on failure, logged. */
struct fpool__proc *fpool__proc_spawn(struct fpool__slot *s)
{
	struct fpool_pool *pool = s->pool;
	struct fpool__proc *p;
	struct fpool__spawn sp;
	int child[4], err;
	int listeners[pool->nlisteners ? pool->nlisteners : 1];
	char addr[108], names[4096];
	size_t nn = 0;
	sigset_t all;
	pid_t pid;

	p = proc_new(s, child, addr, sizeof(addr));
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
	names[0] = '\0';
	for (size_t i = 0; i < pool->nlisteners; i++) {
		listeners[i] = pool->listeners[i].fd;
		/* LISTEN_FDNAMES: the addresses, ':' being its separator
		 * ("127.0.0.1_8080", "unix_/run/app.sock"). */
		for (const char *c = pool->listeners[i].addr.text;
		     *c != '\0' && nn + 2 < sizeof(names); c++)
			names[nn++] = *c == ':' ? '_' : *c;
		if (i + 1 < pool->nlisteners && nn + 1 < sizeof(names))
			names[nn++] = ':';
		names[nn] = '\0';
	}
	/* What every worker of the pool is told (pool.c), then its own. */
	sp = pool->spawn;
	sp.id = s->id;
	sp.chan = child[0];
	sp.out = child[1];
	sp.err = child[2];
	sp.listeners = listeners;
	sp.nlisteners = pool->nlisteners; /* a reload may change them */
	sp.max_requests = p->max_requests;
	sp.activity = s->shm;
	sp.exec_err = child[3];
	sp.notify_addr = addr[0] != '\0' ? addr : NULL;
	sp.listen_names = names;
	/* Block every signal across fork(): libevent's handler writes to a
	 * socketpair the new child shares with us until it rebuilds its own
	 * loop, so a signal caught there would wake the master instead. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &sp.mask);
	pid = fork();
	if (pid == 0) {
		if (sp.exec_program != NULL)
			fpool__exec_run(&sp);
		fpool__worker_run(&sp);
	}
	err = errno;
	sigprocmask(SIG_SETMASK, &sp.mask, NULL);
	for (int i = 0; i < 4; i++)
		if (child[i] >= 0)
			close(child[i]);
	if (pid < 0) {
		fpool__log_errno(FPOOL_LOG_ERROR, err, "worker %u: fork failed",
				 s->id);
		fpool__proc_free(p);
		return NULL;
	}

	p->pid = pid;
	p->started = p->last_seen = fpool__now();
	if (pool->cfg.max_lifetime > 0)
		p->retire_at = p->started +
			       pool->cfg.max_lifetime *
				       (1 + 0.1 * random() / (double)RAND_MAX);
	p->pidfd = pidfd_open(pid);
	proc_watch(p);
	return p;
}

struct fpool__proc *fpool__proc_blank(struct fpool__slot *s)
{
	static const char *const names[2] = { "stdout", "stderr" };
	struct fpool__proc *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return NULL;
	p->slot = s;
	p->pidfd = p->chan = p->exec_err = -1;
	for (int i = 0; i < 2; i++) {
		p->pipes[i].proc = p;
		p->pipes[i].stream = names[i];
		p->pipes[i].fd = -1;
	}
	p->timer = evtimer_new(s->pool->base, proc_timer_cb, p);
	if (p->timer == NULL) {
		free(p);
		return NULL;
	}
	return p;
}

void fpool__proc_adopt(struct fpool__proc *p, double deadline)
{
	proc_watch(p);
	/* What it missed while the images changed is credited, as after a
	 * late check (supervise.c): its heartbeats waited in the channel. */
	p->last_seen = fpool__now();
	if (p->state == PROC_STOPPING && !p->killed)
		arm(p->timer, deadline > 0 ? deadline : 0, p->slot->id);
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

void fpool__proc_poll(struct fpool__proc *p)
{
	if (p->chan_ev != NULL && !p->held) {
		proc_chan_read(p, false);
		fpool__log_flush();
	}
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

void fpool__proc_drain(struct fpool__proc *p)
{
	/* Read what the worker sent and printed before it died (a late
	 * "ready", its last records and lines) before saying it died. */
	if (p->chan_ev != NULL)
		proc_chan_read(p, true);
	if (p->exec_err >= 0)
		proc_exec_read(p);
	fpool__pipe_drain(&p->pipes[0]);
	fpool__pipe_drain(&p->pipes[1]);
}
