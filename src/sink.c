/*
 * Sinks: where the master writes log records and the lines its workers
 * printed (its stderr, --log-file, --stdout, --stderr), without ever
 * blocking its event loop on them.
 *
 * The policy, as journald and syslog daemons have it: records are
 * appended to a bounded queue in memory and written as the file takes
 * them.  A reader that falls behind first slows the workers down
 * (back-pressure: above SINK_HIGH queued bytes the master stops reading
 * their channels and output pipes, so a worker that logs blocks in its
 * own write, as it would with a slow disk); but a sink that takes nothing
 * for SINK_STUCK seconds is given up on: reading resumes, records that do
 * not fit in SINK_MAX bytes are dropped and counted, and once the queue
 * is empty again one record says how many were lost and for how long.  A
 * sink that fails (EFBIG past RLIMIT_FSIZE, ENOSPC, EPIPE...) drops its
 * queue likewise, says so on stderr, and is tried again with each record.
 * Records are whole lines and are never cut by a drop.
 *
 * How a write to the fd never blocks is nbfd.c's business.
 *
 * Until a sink is attached to the master's loop (and in a worker, whose
 * stderr is the master's pipe) it writes synchronously: before the pool
 * runs, and in workers, where blocking is the back-pressure we want.
 * After the loop (fpool__sink_detach), a write waits at most SINK_LINGER
 * seconds, so a stuck reader cannot keep a stopping master alive.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "fpool-int.h"

/* Above this many queued bytes the workers are slowed down. */
#define SINK_HIGH (256 * 1024)
/* Below this many they are read at full speed again. */
#define SINK_LOW (64 * 1024)
/* Records that would take the queue past this are dropped. */
#define SINK_MAX (1024 * 1024)
/* Seconds without progress before a sink is given up on. */
#define SINK_STUCK 1.0
/* Seconds a write may wait once the master's loop has ended. */
#define SINK_LINGER 1.0

enum sink_mode {
	SINK_SYNC,   /* not attached: write at once, blocking */
	SINK_ASYNC,  /* attached to the master's loop: queue, never block */
	SINK_LINGER_ /* after the loop: write at once, waiting a little */
};

struct fpool__sink {
	int fd;	    /* the sink's own fd */
	bool owned; /* we opened fd (a path): close it when done */
	char *path; /* to reopen (SIGUSR1), or NULL */
	char what[160];
	enum sink_mode mode;
	struct fpool__nbfd out; /* how fd is written without blocking */
	struct evbuffer *queue;
	struct event *ev;    /* EV_WRITE while the queue waits on the fd */
	struct event *timer; /* the stuck check */
	double progress;     /* last time bytes went out (or queue empty) */
	bool given_up;	     /* stuck: dropping instead of slowing down */
	bool congested;	     /* counted in `congested_sinks` */
	int error;	     /* the last write error, 0 when writing works */
	uint64_t dropped;    /* records lost since the last report */
	double drop_since;   /* when the first of them was lost */
	int drop_reason;     /* errno of a failure, or 0 for a stuck sink */
};

static unsigned congested_sinks;
static fpool__sink_format_cb format_record; /* set by log.c */
static fpool__sink_notice_cb notice;	    /* likewise */
static fpool__pressure_cb pressure_cb;
static void *pressure_arg;

void fpool__sink_set_format(fpool__sink_format_cb cb,
			    fpool__sink_notice_cb notice_cb)
{
	format_record = cb;
	notice = notice_cb;
}

void fpool__sink_on_pressure(fpool__pressure_cb cb, void *arg)
{
	pressure_cb = cb;
	pressure_arg = arg;
	if (cb == NULL)
		congested_sinks = 0; /* no one to slow down any more */
}

/* Leave the count of congested sinks, telling the pool when the last
 * one left. */
static void leave_pressure(struct fpool__sink *s)
{
	if (!s->congested)
		return;
	s->congested = false;
	if (congested_sinks > 0 && --congested_sinks == 0 && pressure_cb)
		pressure_cb(false, pressure_arg);
}

bool fpool__sink_pressure(void)
{
	return congested_sinks > 0;
}

/* Recompute whether this sink slows the workers down, and tell the pool
 * when the answer for all sinks changes. */
static void update_pressure(struct fpool__sink *s)
{
	size_t n = s->queue != NULL ? evbuffer_get_length(s->queue) : 0;
	bool was = s->congested, now;

	if (s->mode != SINK_ASYNC || s->given_up || s->error != 0)
		now = false;
	else if (was)
		now = n > SINK_LOW;
	else
		now = n > SINK_HIGH;
	if (now == was)
		return;
	s->congested = now;
	if (now && congested_sinks++ == 0 && pressure_cb != NULL)
		pressure_cb(true, pressure_arg);
	if (!now && congested_sinks > 0 && --congested_sinks == 0 &&
	    pressure_cb != NULL)
		pressure_cb(false, pressure_arg);
}

/* Records (lines) in the first n bytes of the queue. */
static uint64_t count_records(struct evbuffer *b, size_t n)
{
	struct evbuffer_ptr p;
	uint64_t count = 0;

	if (n == 0)
		return 0;
	evbuffer_ptr_set(b, &p, 0, EVBUFFER_PTR_SET);
	while ((p = evbuffer_search_range(b, "\n", 1, &p, NULL)).pos >= 0 &&
	       (size_t)p.pos < n) {
		count++;
		if (evbuffer_ptr_set(b, &p, 1, EVBUFFER_PTR_ADD) < 0)
			break;
	}
	/* A record cut by a partial write still counts once. */
	return count > 0 ? count : 1;
}

static void note_dropped(struct fpool__sink *s, uint64_t records, int reason)
{
	if (records == 0)
		return;
	if (s->dropped == 0) {
		s->drop_since = fpool__now();
		s->drop_reason = reason;
	}
	s->dropped += records;
}

/*
 * One line straight to the master's stderr, never blocking: the word that
 * a sink failed, when that sink may be the log itself.  Best effort by
 * design; there is nowhere else to say it.
 */
static void tell_stderr(const char *line, size_t len)
{
	struct pollfd pfd = { .fd = STDERR_FILENO, .events = POLLOUT };
	ssize_t n;

	if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT))
		return;
	if (len > PIPE_BUF)
		len = PIPE_BUF;
	n = write(STDERR_FILENO, line, len);
	(void)n;
}

/* A write failed with `err` (not EAGAIN): drop what is queued. */
static void sink_failed(struct fpool__sink *s, int err)
{
	size_t n = evbuffer_get_length(s->queue);

	note_dropped(s, count_records(s->queue, n), err);
	evbuffer_drain(s->queue, n);
	if (s->error == 0) {
		char line[512];
		int len = snprintf(line, sizeof(line),
				   "forkpool: cannot write to %s: %s; records "
				   "are dropped until it works again\n",
				   s->what, strerror(err));

		if (s->fd != STDERR_FILENO && len > 0)
			tell_stderr(line, (size_t)len);
	}
	s->error = err;
}

static void arm_write(struct fpool__sink *s)
{
	struct timeval tv = fpool__tv(SINK_STUCK);

	/* Should the event not be added, the stuck timer tries again. */
	if (s->ev != NULL && !event_pending(s->ev, EV_WRITE, NULL))
		event_add(s->ev, NULL);
	if (s->timer != NULL && !evtimer_pending(s->timer, NULL))
		evtimer_add(s->timer, &tv);
}

/*
 * Write what is queued.  Asynchronous: as much as the fd takes now, then
 * wait for room from the loop.  Synchronous: all of it, waiting (at most
 * SINK_LINGER per wait after the loop).
 */
static void sink_write(struct fpool__sink *s)
{
	size_t len;
	ssize_t n;

	while ((len = evbuffer_get_length(s->queue)) > 0) {
		n = fpool__nbfd_writev(&s->out, s->queue);
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN) {
			int w;

			if (s->mode == SINK_ASYNC) {
				arm_write(s);
				break;
			}
			w = fpool__nbfd_wait(&s->out, s->mode == SINK_SYNC
							      ? -1
							      : SINK_LINGER);
			if (w == -ETIMEDOUT) {
				note_dropped(s, count_records(s->queue, len),
					     0);
				evbuffer_drain(s->queue, len);
				s->given_up = true;
				break;
			}
			if (w < 0) {
				sink_failed(s, -w);
				break;
			}
			continue;
		}
		if (n < 0) {
			sink_failed(s, (int)-n);
			break;
		}
		evbuffer_drain(s->queue, (size_t)n);
		s->progress = fpool__now();
		s->error = 0; /* it works (again) */
		s->given_up = false;
	}
	if (evbuffer_get_length(s->queue) == 0) {
		s->progress = fpool__now();
		if (s->ev != NULL)
			event_del(s->ev);
		if (s->timer != NULL)
			event_del(s->timer);
	}
	update_pressure(s);
}

/* Say how many records were lost, once the sink takes records again. */
static void report_dropped(struct fpool__sink *s)
{
	char line[512];
	struct fpool__record r = {
		.time = fpool__realtime(),
		.level = FPOOL_LOG_WARNING,
		.worker = -1,
		.pid = getpid(),
		.msg = line,
	};
	struct evbuffer *b;
	uint64_t n = s->dropped;
	double for_s = fpool__now() - s->drop_since;

	if (n == 0 || s->error != 0 || evbuffer_get_length(s->queue) > 0 ||
	    format_record == NULL)
		return;
	if (s->drop_reason != 0)
		r.msglen = (size_t)snprintf(
			line, sizeof(line),
			"%llu records to %s were dropped over %.3f s: %s",
			(unsigned long long)n, s->what, for_s,
			strerror(s->drop_reason));
	else
		r.msglen = (size_t)snprintf(
			line, sizeof(line),
			"%llu records to %s were dropped over %.3f s: it took "
			"nothing for %.3g s at a time (a reader that stopped "
			"reading?)",
			(unsigned long long)n, s->what, for_s, SINK_STUCK);
	if (r.msglen >= sizeof(line))
		r.msglen = sizeof(line) - 1;
	s->dropped = 0;
	b = evbuffer_new();
	if (b == NULL)
		return;
	if (format_record(&r, b) == 0)
		evbuffer_add_buffer(s->queue, b);
	evbuffer_free(b);
	sink_write(s);
}

static void flush(struct fpool__sink *s)
{
	sink_write(s);
	report_dropped(s);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	flush(arg);
}

/* The queue took nothing for SINK_STUCK seconds: stop slowing the
 * workers down for it. */
static void stuck_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool__sink *s = arg;
	struct timeval tv = fpool__tv(SINK_STUCK);
	double now = fpool__now();

	(void)fd;
	(void)what;
	flush(s); /* also retries when the EV_WRITE event could not be added */
	if (evbuffer_get_length(s->queue) == 0)
		return;
	if (!s->given_up && now - s->progress >= SINK_STUCK) {
		s->given_up = true;
		update_pressure(s);
		if (notice != NULL) {
			char msg[sizeof(s->what) + 160];

			snprintf(msg, sizeof(msg),
				 "%s took nothing for %.3g s: records that do "
				 "not fit in its queue are dropped, and "
				 "counted, until it takes them again",
				 s->what, SINK_STUCK);
			notice(msg);
		}
	}
	evtimer_add(s->timer, &tv);
}

int fpool__sink_new(struct fpool__sink **out, const char *path, int fd,
		    const char *what)
{
	struct fpool__sink *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (s == NULL)
		return -ENOMEM;
	s->fd = s->out.wfd = -1;
	s->queue = evbuffer_new();
	if (s->queue == NULL || (path != NULL && !(s->path = strdup(path)))) {
		fpool__sink_free(s);
		return -ENOMEM;
	}
	if (path != NULL) {
		fd = fpool__nbfd_open_path(path);
		if (fd < 0) {
			fpool__sink_free(s);
			return fd;
		}
		s->owned = true;
		snprintf(s->what, sizeof(s->what), "%s %s", what, path);
	} else {
		snprintf(s->what, sizeof(s->what), "%s", what);
	}
	s->fd = fd;
	s->progress = fpool__now();
	fpool__nbfd_init(&s->out, s->fd);
	*out = s;
	return 0;
}

int fpool__sink_reopen(struct fpool__sink *s)
{
	int fd;

	if (s->path == NULL)
		return 0;
	fd = fpool__nbfd_open_path(s->path);
	if (fd < 0)
		return fd;
	/* What is queued goes to the new file; a file renamed by logrotate
	 * has what was written already. */
	fpool__nbfd_close(&s->out, s->fd);
	if (s->owned)
		close(s->fd);
	s->fd = s->out.wfd = fd;
	s->owned = true;
	s->error = 0;
	fpool__sink_refresh(s);
	flush(s);
	return 0;
}

void fpool__sink_refresh(struct fpool__sink *s)
{
	if (s->ev != NULL) {
		event_free(s->ev);
		s->ev = NULL;
	}
	fpool__nbfd_close(&s->out, s->fd);
	fpool__nbfd_init(&s->out, s->fd);
	/* Without the event the stuck timer retries (arm_write). */
	if (s->mode == SINK_ASYNC && s->out.kind != FPOOL_FD_FILE)
		s->ev = event_new(event_get_base(s->timer), s->out.wfd,
				  EV_WRITE, write_cb, s);
}

int fpool__sink_attach(struct fpool__sink *s, struct event_base *base)
{
	if (s->mode == SINK_ASYNC)
		return 0;
	/* A regular file never makes us wait; its fd cannot be polled
	 * anyway (epoll refuses regular files). */
	if (s->out.kind != FPOOL_FD_FILE) {
		s->ev = event_new(base, s->out.wfd, EV_WRITE, write_cb, s);
		if (s->ev == NULL)
			return -ENOMEM;
	}
	s->timer = evtimer_new(base, stuck_cb, s);
	if (s->timer == NULL) {
		if (s->ev != NULL)
			event_free(s->ev);
		s->ev = NULL;
		return -ENOMEM;
	}
	s->mode = SINK_ASYNC;
	return 0;
}

/* Free the sink's events and leave the congested count. */
static void release_events(struct fpool__sink *s)
{
	if (s->ev != NULL)
		event_free(s->ev);
	if (s->timer != NULL)
		event_free(s->timer);
	s->ev = s->timer = NULL;
	leave_pressure(s);
}

void fpool__sink_detach(struct fpool__sink *s)
{
	if (s == NULL || s->mode != SINK_ASYNC)
		return;
	release_events(s);
	s->mode = SINK_LINGER_;
	/* Write what is left, each wait bounded. */
	flush(s);
}

void fpool__sink_forget(struct fpool__sink *s)
{
	if (s == NULL)
		return;
	/* In a new worker: the queued records are the master's to write,
	 * and the events belong to the master's loop, whose epoll instance
	 * is still the master's own: deleting a pending fd event here would
	 * unregister it there, so that one is left as it is (the abandoned
	 * loop keeps it).  A timer touches no epoll instance. */
	if (s->timer != NULL)
		event_free(s->timer);
	if (s->ev != NULL && !event_pending(s->ev, EV_WRITE, NULL))
		event_free(s->ev);
	s->ev = s->timer = NULL;
	leave_pressure(s);
	evbuffer_drain(s->queue, evbuffer_get_length(s->queue));
	s->dropped = 0;
	fpool__nbfd_close(&s->out, s->fd);
	s->mode = SINK_SYNC;
}

void fpool__sink_add(struct fpool__sink *s, struct evbuffer *record)
{
	size_t n = evbuffer_get_length(record);

	if (n == 0)
		return;
	if (s->mode == SINK_LINGER_ && s->given_up) {
		/* After the loop, a sink that made us wait in vain once is
		 * not waited for again. */
		note_dropped(s, count_records(record, n), 0);
		evbuffer_drain(record, n);
		return;
	}
	if (s->mode == SINK_ASYNC &&
	    evbuffer_get_length(s->queue) + n > SINK_MAX) {
		note_dropped(s, count_records(record, n), 0);
		evbuffer_drain(record, n);
		return;
	}
	evbuffer_add_buffer(s->queue, record);
	update_pressure(s);
}

struct evbuffer *fpool__sink_room(struct fpool__sink *s, size_t bound)
{
	if ((s->mode == SINK_LINGER_ && s->given_up) ||
	    (s->mode == SINK_ASYNC &&
	     evbuffer_get_length(s->queue) + bound > SINK_MAX)) {
		note_dropped(s, 1, 0);
		return NULL;
	}
	return s->queue;
}

void fpool__sink_added(struct fpool__sink *s)
{
	update_pressure(s);
}

void fpool__sink_take(struct fpool__sink *dst, struct fpool__sink *src)
{
	evbuffer_add_buffer(dst->queue, src->queue);
	update_pressure(src);
	update_pressure(dst);
}

void fpool__sink_flush(struct fpool__sink *s)
{
	if (s != NULL && evbuffer_get_length(s->queue) > 0)
		flush(s);
}

size_t fpool__sink_queued(const struct fpool__sink *s)
{
	return evbuffer_get_length(s->queue);
}

uint64_t fpool__sink_dropped(const struct fpool__sink *s)
{
	return s->dropped;
}

void fpool__sink_free(struct fpool__sink *s)
{
	if (s == NULL)
		return;
	release_events(s);
	if (s->queue != NULL)
		evbuffer_free(s->queue);
	fpool__nbfd_close(&s->out, s->fd);
	if (s->owned && s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s);
}
