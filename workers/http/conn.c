/*
 * The http worker's connections and their I/O loop: accept, read into
 * the shared buffer, parse and answer (parse.c), send, close.  The path
 * of a request and the flow control are described in workers/http.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common.h"
#include "http-int.h"

/* ---- Buffers ---------------------------------------------------------- */

/* Keep bytes that were received but not parsed (parsing stopped). */
static void in_keep(struct conn *c, const char *p, size_t n)
{
	size_t cap;
	char *b;

	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_len + n > c->in_cap) {
		cap = c->in_cap ? c->in_cap : 4096;
		while (cap < c->in_len + n)
			cap *= 2;
		b = realloc(c->in, cap);
		if (b == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: out of memory for the input of fd "
				  "%d; closing it",
				  c->fd);
			c->broken = true;
			return;
		}
		c->in = b;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, p, n);
	c->in_len += n;
}

/* Give back buffers a burst made large, if they are empty.  Called when
 * the connection's timer fires (every few seconds at most), not whenever
 * they empty: a client pipelining back to back would have them freed and
 * grown again at every read. */
void buffers_trim(struct conn *c)
{
	if (c->out_off == c->out_len && c->out_cap > HTTP_BUF_KEEP) {
		free(c->out);
		c->out = NULL;
		c->out_cap = c->out_off = c->out_len = 0;
	}
	if (c->in_off == c->in_len && c->in_cap > HTTP_BUF_KEEP) {
		free(c->in);
		c->in = NULL;
		c->in_cap = c->in_off = c->in_len = 0;
	}
}

/* ---- Connections ------------------------------------------------------ */

void conn_free(struct conn *c)
{
	struct http *h = c->h;

	event_del(c->rev);
	event_del(c->wev);
	event_del(c->timer);
	event_del(c->sleep_ev);
	sleeper_unlink(c);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->fd >= 0 && close(c->fd) < 0)
		fpool_log(FPOOL_LOG_WARNING, "http: close of fd %d: %s", c->fd,
			  strerror(errno));
	if (c->url != c->url_inline)
		free(c->url);
	free(c->in);
	free(c->out);
	free(c);
}

/* Close after a failed syscall: a peer going away is expected. */
static void conn_fail(struct conn *c, const char *what, int err)
{
	if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT ||
	    err == ENOTCONN)
		fpool_log(FPOOL_LOG_DEBUG, "http: %s on fd %d: %s", what, c->fd,
			  strerror(err));
	else
		fpool_log(FPOOL_LOG_WARNING,
			  "http: %s on fd %d: %s; closing it", what, c->fd,
			  strerror(err));
	conn_free(c);
}

/* Send what is queued.  0, or -1 if the connection was closed. */
static int conn_send(struct conn *c)
{
	bool progress = false;

	while (out_pending(c) > 0) {
		ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c),
				 MSG_NOSIGNAL);

		if (n > 0) {
			c->out_off += (size_t)n;
			progress = true;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_fail(c, "send", n < 0 ? errno : EPIPE);
		return -1;
	}
	if (out_pending(c) == 0) {
		if (c->writing) {
			event_del(c->wev);
			c->writing = false;
		}
		c->out_full = false;
		/* Waiting for the next request starts now. */
		c->idle_since = c->h->now;
		return 0;
	}
	if (out_pending(c) <= HTTP_OUT_LOW)
		c->out_full = false;
	if (!c->writing) {
		if (event_add(c->wev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot watch fd %d for writing; "
				  "closing it",
				  c->fd);
			conn_free(c);
			return -1;
		}
		c->writing = true;
		c->send_since = c->h->now;
	} else if (progress) {
		c->send_since = c->h->now;
	}
	return 0;
}

/*
 * Bring the connection up to date after anything happened: parse what
 * waits, send, then close or watch what is due next.  The connection may
 * be freed.
 */
void conn_run(struct conn *c)
{
	bool want_read;

	for (;;) {
		if (in_pending(c) && can_parse(c)) {
			size_t off = c->in_off, n;

			/* Taken out of the buffer while parsed, so that
			 * more_input() sees only what follows a request. */
			c->in_off = c->in_len;
			n = conn_feed(c, c->in + off, c->in_len - off);
			if (!c->closing) /* else never parsed */
				c->in_off = off + n;
		}
		if (c->broken) {
			conn_free(c);
			return;
		}
		if (out_pending(c) > 0 && conn_send(c) != 0)
			return;
		if (!(in_pending(c) && can_parse(c)))
			break;
	}
	if (out_pending(c) == 0)
		c->out_off = c->out_len = 0;
	if (!in_pending(c))
		c->in_off = c->in_len = 0;
	if (c->closing && out_pending(c) == 0 && c->phase != PH_LINGER &&
	    c->phase != PH_BUSY) {
		/* The last answer is out.  With input left unread, shut our
		 * side and drop what comes until the client closes: a close
		 * now would reset the connection, and could destroy the
		 * answer before the client read it. */
		if (!c->linger || c->eof) {
			conn_free(c);
			return;
		}
		if (shutdown(c->fd, SHUT_WR) != 0) {
			conn_fail(c, "shutdown", errno);
			return;
		}
		c->phase = PH_LINGER;
		c->linger_at = c->h->now;
	}
	if (c->eof && out_pending(c) == 0 && c->phase != PH_BUSY) {
		/* The client is done sending, and everything it sent that
		 * could be answered is answered. */
		conn_free(c);
		return;
	}
	want_read = c->phase == PH_LINGER ||
		    (can_parse(c) && !c->eof && !in_pending(c));
	if (want_read != c->reading) {
		if (want_read ? event_add(c->rev, NULL) : event_del(c->rev)) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot watch fd %d for reading; "
				  "closing it",
				  c->fd);
			conn_free(c);
			return;
		}
		c->reading = want_read;
	}
	conn_arm(c);
	if (c->broken)
		conn_free(c);
}

void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct http *h = c->h;
	ssize_t n;
	size_t used;

	(void)what;
	n = recv(fd, h->rbuf, HTTP_READ_SIZE, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		conn_fail(c, "recv", errno);
		return;
	}
	h->now = mono_now();
	if (n == 0) {
		if (c->phase == PH_HEADERS || c->phase == PH_BODY ||
		    c->phase == PH_LINGER) {
			/* Gone before its request was complete, or done
			 * after our last answer. */
			conn_free(c);
			return;
		}
		c->eof = true;
		conn_run(c);
		return;
	}
	if (c->phase == PH_LINGER) {
		conn_run(c);
		return; /* dropped */
	}
	used = conn_feed(c, h->rbuf, (size_t)n);
	if (used < (size_t)n && !c->closing)
		in_keep(c, h->rbuf + used, (size_t)n - used);
	conn_run(c);
}

void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	c->h->now = mono_now();
	conn_run(c);
}

void accept_cb(struct fpool_acceptor *a, int fd, const struct sockaddr *sa,
	       socklen_t salen, void *arg)
{
	struct http *h = arg;
	size_t es = h->event_size;
	struct conn *c = calloc(1, sizeof(*c) + 4 * es + 16);
	char *ev;

	(void)a;
	(void)salen;
	if (c == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory for a "
					   "connection; closing it");
		close(fd);
		return;
	}
	/* The four events, aligned, after the struct. */
	ev = (char *)(((uintptr_t)(c + 1) + 15) & ~(uintptr_t)15);
	c->rev = (struct event *)ev;
	c->wev = (struct event *)(ev + es);
	c->timer = (struct event *)(ev + 2 * es);
	c->sleep_ev = (struct event *)(ev + 3 * es);
	c->h = h;
	c->fd = fd;
	c->url = c->url_inline;
	c->url_cap = sizeof(c->url_inline);
	h->now = mono_now();
	c->req_start = h->now;
	c->idle_since = h->now;
	llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
	c->parser.data = c;
	if (event_assign(c->rev, h->base, fd, EV_READ | EV_PERSIST,
			 conn_read_cb, c) != 0 ||
	    event_assign(c->wev, h->base, fd, EV_WRITE | EV_PERSIST,
			 conn_write_cb, c) != 0 ||
	    event_assign(c->timer, h->base, -1, 0, conn_timer_cb, c) != 0 ||
	    event_assign(c->sleep_ev, h->base, -1, 0, sleep_done_cb, c) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot set up the events of "
					   "a connection; closing it");
		close(fd);
		free(c);
		return;
	}
	/* Answers go out in one send each; do not let Nagle hold back one
	 * that follows another not acknowledged yet (100 Continue, then the
	 * answer). */
	if (wk_nodelay(fd, sa) < 0)
		fpool_log(FPOOL_LOG_WARNING, "http: TCP_NODELAY on fd %d: %s",
			  fd, strerror(errno));
	c->next = h->conns;
	if (h->conns != NULL)
		h->conns->prev = c;
	h->conns = c;
	conn_run(c);
}
