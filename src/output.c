/*
 * Worker output: the master reads each worker's stdout and stderr from
 * pipes, splits the bytes into lines, keeps the last lines of each slot in
 * a ring buffer and writes every line, tagged with the worker's id and pid,
 * to --stdout/--stderr or the log.
 *
 * Nothing a worker printed is lost: a final line without a newline is
 * still a line, and when a worker exits its pipes are drained before the
 * master logs the exit, so a crashing worker's last words come first.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "fpool-int.h"

/* Bytes read from a pipe per callback before giving other events a turn. */
#define PIPE_BATCH (4 * 65536)

/* ---- line splitter ------------------------------------------------------ */

int fpool__linebuf_feed(struct fpool__linebuf *lb, const char *data, size_t n,
			fpool__line_cb cb, void *arg)
{
	while (n > 0) {
		const char *nl;
		size_t take;

		if (lb->cut) {
			/* The last piece was cut at FPOOL_LINE_MAX: a newline
			 * right after it ends that line, not a new empty
			 * one, however the reads split the stream. */
			lb->cut = false;
			if (*data == '\n') {
				data++;
				n--;
				continue;
			}
		}
		nl = memchr(data, '\n', n);
		take = nl ? (size_t)(nl - data) : n;

		/* A line longer than FPOOL_LINE_MAX is cut into pieces of
		 * that size, so one endless line cannot grow our memory. */
		if (lb->len + take > FPOOL_LINE_MAX) {
			take = FPOOL_LINE_MAX - lb->len;
			nl = NULL;
		}
		if (lb->len == 0 && nl != NULL) {
			/* The common case: a whole line, no copy. */
			cb(data, take, arg);
		} else {
			if (lb->buf == NULL) {
				lb->buf = malloc(FPOOL_LINE_MAX);
				if (lb->buf == NULL)
					return -ENOMEM;
			}
			memcpy(lb->buf + lb->len, data, take);
			lb->len += take;
			if (nl != NULL || lb->len == FPOOL_LINE_MAX) {
				cb(lb->buf, lb->len, arg);
				lb->cut = nl == NULL;
				lb->len = 0;
			}
		}
		if (nl != NULL)
			take++; /* the newline itself */
		data += take;
		n -= take;
	}
	return 0;
}

void fpool__linebuf_flush(struct fpool__linebuf *lb, fpool__line_cb cb,
			  void *arg)
{
	if (lb->len > 0)
		cb(lb->buf, lb->len, arg);
	lb->len = 0;
	lb->cut = false;
}

void fpool__linebuf_free(struct fpool__linebuf *lb)
{
	free(lb->buf);
	lb->buf = NULL;
	lb->len = 0;
}

/* ---- ring of the last lines --------------------------------------------- */

/*
 * What a slot keeps for `forkpool ctl output` is bounded in bytes as well
 * as in lines: FPOOL_RING_BYTES per slot, lines longer than
 * FPOOL_RING_LINE kept cut with a marker.  By lines only, 128 workers
 * printing 16 KiB lines held 400 MiB in the master (13 GiB at 4096).
 * Most workers never print: a slot's array of line pointers is only
 * allocated for the first line it keeps.
 */
void fpool__ring_init(struct fpool__ring *r, size_t cap)
{
	memset(r, 0, sizeof(*r));
	r->cap = cap;
}

static void ring_drop_oldest(struct fpool__ring *r)
{
	r->bytes -= r->lines[r->head]->len + 1;
	free(r->lines[r->head]);
	r->lines[r->head] = NULL;
	r->head = (r->head + 1) % r->cap;
	r->n--;
}

int fpool__ring_push(struct fpool__ring *r, const char *line, size_t len)
{
	char marker[64];
	size_t keep = len, mlen = 0, size;
	struct fpool__line *copy;

	if (r->cap == 0)
		return 0;
	if (r->lines == NULL &&
	    (r->lines = calloc(r->cap, sizeof(*r->lines))) == NULL)
		return -ENOMEM;
	if (len > FPOOL_RING_LINE) {
		mlen = (size_t)snprintf(marker, sizeof(marker),
					" [... %zu bytes cut]", len);
		keep = FPOOL_RING_LINE - mlen;
		/* Cut at the start of a UTF-8 sequence, not inside one. */
		while (keep > 0 && ((unsigned char)line[keep] & 0xc0) == 0x80)
			keep--;
		mlen = (size_t)snprintf(marker, sizeof(marker),
					" [... %zu bytes cut]", len - keep);
	}
	size = keep + mlen + 1;
	copy = malloc(sizeof(*copy) + size);
	if (copy == NULL)
		return -ENOMEM;
	/* Every byte is kept, NULs too; the NUL after them is for C. */
	memcpy(copy->text, line, keep);
	memcpy(copy->text + keep, marker, mlen);
	copy->len = keep + mlen;
	copy->text[copy->len] = '\0';
	/* The oldest lines make room. */
	while (r->n > 0 &&
	       (r->n == r->cap || r->bytes + size > FPOOL_RING_BYTES))
		ring_drop_oldest(r);
	r->lines[(r->head + r->n) % r->cap] = copy;
	r->n++;
	r->bytes += size;
	return 0;
}

const char *fpool__ring_get(const struct fpool__ring *r, size_t i, size_t *len)
{
	const struct fpool__line *l;

	if (i >= r->n)
		return NULL;
	l = r->lines[(r->head + i) % r->cap];
	if (len != NULL)
		*len = l->len;
	return l->text;
}

void fpool__ring_free(struct fpool__ring *r)
{
	size_t cap = r->cap;

	for (size_t i = 0; i < r->n; i++)
		free(r->lines[(r->head + i) % r->cap]);
	free(r->lines);
	fpool__ring_init(r, cap);
}

/* ---- the master's end of a worker's stdout/stderr ----------------------- */

static void pipe_line_cb(const char *line, size_t len, void *arg)
{
	struct fpool__pipe *p = arg;
	struct fpool__slot *s = p->proc->slot;
	struct fpool__record r = {
		.time = fpool__realtime(),
		.level = FPOOL_LOG_INFO,
		.worker = (int)s->id,
		.pid = p->proc->pid,
		.stream = p->stream,
		.msg = line,
		.msglen = len,
	};

	if (fpool__ring_push(&s->ring, line, len) != 0)
		fpool_log(FPOOL_LOG_WARNING,
			  "worker %u: out of memory; a "
			  "line is missing from its output ring",
			  s->id);
	fpool__log_record(s->pool->out[p == &p->proc->pipes[1]], &r, false);
}

void fpool__pipe_close(struct fpool__pipe *p)
{
	if (p->ev != NULL) {
		event_free(p->ev);
		p->ev = NULL;
	}
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	fpool__linebuf_free(&p->lb);
}

enum pipe_result {
	PIPE_CLOSED, /* EOF (or an error): flushed and closed */
	PIPE_EMPTY,  /* nothing more to read now */
	PIPE_MORE,   /* stopped at the limit, or a sink fell behind */
};

/* Read what is there, up to `limit` bytes (`all`: even while a sink is
 * behind); at EOF, flush the last partial line and close. */
static enum pipe_result pipe_read(struct fpool__pipe *p, size_t limit, bool all)
{
	static char buf[65536]; /* the master is single-threaded */
	size_t total = 0;

	while (p->fd >= 0) {
		ssize_t n;

		if (total >= limit ||
		    (!all && p->proc->slot->pool->reading_paused))
			return PIPE_MORE;
		n = read(p->fd, buf,
			 limit - total < sizeof(buf) ? limit - total
						     : sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return PIPE_EMPTY;
		if (n < 0)
			fpool__log_errno(FPOOL_LOG_WARNING, errno,
					 "worker %u: reading its %s",
					 p->proc->slot->id, p->stream);
		if (n <= 0) {
			fpool__linebuf_flush(&p->lb, pipe_line_cb, p);
			fpool__pipe_close(p);
			return PIPE_CLOSED;
		}
		total += (size_t)n;
		if (fpool__linebuf_feed(&p->lb, buf, (size_t)n, pipe_line_cb,
					p) != 0)
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u: out of memory "
				  "splitting its %s",
				  p->proc->slot->id, p->stream);
	}
	return PIPE_CLOSED;
}

static void pipe_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	pipe_read(arg, PIPE_BATCH, false);
	fpool__log_flush();
}

int fpool__pipe_open(struct fpool__pipe *p, struct fpool__proc *proc,
		     const char *stream, int *child_end)
{
	int fds[2];

	p->proc = proc;
	p->stream = stream;
	p->fd = -1;
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	/* Our end is read by the loop; the worker's end blocks, so a
	 * worker printing faster than we read waits instead of losing
	 * lines. */
	if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
		int err = -errno;

		close(fds[0]);
		close(fds[1]);
		return err;
	}
	p->fd = fds[0];
	*child_end = fds[1];
	return 0;
}

int fpool__pipe_watch(struct fpool__pipe *p, struct event_base *base, bool on)
{
	p->ev = event_new(base, p->fd, EV_READ | EV_PERSIST, pipe_cb, p);
	if (p->ev == NULL || (on && event_add(p->ev, NULL) != 0))
		return -ENOMEM;
	return 0;
}

void fpool__pipe_reading(struct fpool__pipe *p, bool on)
{
	if (p->ev == NULL)
		return;
	if (!on)
		event_del(p->ev);
	else if (event_add(p->ev, NULL) != 0)
		fpool_log(FPOOL_LOG_ERROR,
			  "worker %u pid %d: cannot watch its %s again",
			  p->proc->slot->id, (int)p->proc->pid, p->stream);
}

void fpool__pipe_drain(struct fpool__pipe *p)
{
	enum pipe_result r;
	int cap;

	if (p->fd < 0)
		return;
	/* The worker is gone, so whatever it wrote is in the pipe now: at
	 * most the pipe's capacity.  A process it started may still hold
	 * the write end and go on writing (for ever, for all we know): read
	 * what is there up to that capacity, never wait for an EOF that may
	 * not come, and then let the pipe go. */
	cap = fcntl(p->fd, F_GETPIPE_SZ);
	if (cap <= 0)
		cap = 65536;
	r = pipe_read(p, (size_t)cap, true);
	if (r != PIPE_CLOSED) {
		fpool_log(r == PIPE_MORE ? FPOOL_LOG_WARNING : FPOOL_LOG_INFO,
			  "worker %u pid %d exited, but its %s is still open "
			  "in a process it left behind%s; no longer reading it",
			  p->proc->slot->id, (int)p->proc->pid, p->stream,
			  r == PIPE_MORE ? ", which writes on" : "");
		fpool__linebuf_flush(&p->lb, pipe_line_cb, p);
		fpool__pipe_close(p);
	}
	fpool__log_flush();
}
