/*
 * The http worker's clock, and a connection's deadlines: the header and
 * body timeouts, the idle timeout, the stop grace, the linger and a send
 * that makes no progress, all kept by one timer per connection.
 */
#include <time.h>

#include "../common.h"
#include "http-int.h"

/* Monotonic seconds: the connections' deadlines, and struct http's
 * `now`, read at each callback. */
double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Deadlines --------------------------------------------------------- */

/* What a deadline passing means. */
enum deadline_kind {
	DL_CLOSE, /* close: idle, stop grace, linger */
	DL_408,	  /* a request not received in time: 408, then close */
	DL_SEND,  /* a peer that took none of its answers: close */
};

/* The deadline in force (monotonic seconds; 0: none) and its kind. */
static double conn_deadline(const struct conn *c, enum deadline_kind *kind)
{
	const struct http *h = c->h;
	double d = 0;

	*kind = DL_CLOSE;
	switch (c->phase) {
	case PH_IDLE:
		if (c->closing)
			break; /* the write deadline bounds it */
		if (c->nreq == 0) {
			d = c->req_start + h->header_timeout;
		} else {
			d = c->idle_since + h->idle_timeout;
			if (out_pending(c) > 0)
				d = 0; /* not idle until the answers are out */
		}
		if (h->stopping && out_pending(c) == 0) {
			double since =
				c->nreq == 0 ? c->req_start : c->idle_since;
			double g = (since > h->stop_at ? since : h->stop_at) +
				   WK_STOP_GRACE;

			if (d == 0 || g < d)
				d = g;
		}
		break;
	case PH_HEADERS:
		d = c->req_start + h->header_timeout;
		*kind = DL_408;
		break;
	case PH_BODY:
		d = c->body_start + h->header_timeout;
		*kind = DL_408;
		break;
	case PH_BUSY:
		break;
	case PH_LINGER:
		d = c->linger_at + WK_LINGER;
		break;
	}
	/* A peer that takes none of its answers for the idle timeout. */
	if (c->writing) {
		double wd = c->send_since + h->idle_timeout;

		if (d == 0 || wd < d) {
			d = wd;
			*kind = DL_SEND;
		}
	}
	return d;
}

/* Arm the connection's timer for its deadline.  Lazily: a later deadline
 * leaves the timer as it is (it fires early, and is armed again then), so
 * that a busy kept-alive connection does not move it at every request. */
void conn_arm(struct conn *c)
{
	enum deadline_kind kind;
	double d = conn_deadline(c, &kind), left;
	struct timeval tv;

	if (d == 0 || (c->timer_on && c->timer_at <= d))
		return;
	left = d - c->h->now;
	if (left < 0)
		left = 0;
	tv = wk_timeval(left);
	if (evtimer_add(c->timer, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "http: cannot arm the timer of fd %d; closing it",
			  c->fd);
		c->broken = true;
		return;
	}
	c->timer_on = true;
	c->timer_at = d;
}

void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct http *h = c->h;
	enum deadline_kind kind;
	double d;

	(void)fd;
	(void)what;
	h->now = mono_now();
	c->timer_on = false;
	buffers_trim(c);
	d = conn_deadline(c, &kind);
	if (d == 0 || d > h->now + HTTP_SLACK) {
		conn_run(c); /* not yet: arm it again */
		return;
	}
	if (kind == DL_SEND) {
		fpool_log(FPOOL_LOG_DEBUG,
			  "http: fd %d took none of its answers for %g s; "
			  "closing it",
			  c->fd, h->idle_timeout);
		conn_free(c);
		return;
	}
	if (kind == DL_408 && !c->closing) {
		/* Nothing of this request's answer is out yet. */
		conn_refuse(c, 408, "request not received in time");
		conn_run(c);
		return;
	}
	conn_free(c);
}
