/*
 * http: an HTTP/1.1 server on every listener the worker inherits, on
 * libevent's plain events, parsing with llhttp (Node's parser).
 *
 *   GET /              200 "hello from worker ID pid PID"
 *   GET /sleep?ms=N    200 after N ms (0..60000, else 400), without
 *                      blocking the loop: one timer per request
 *   other paths        404; methods other than GET and HEAD: 405, with
 *                      "Allow: GET, HEAD"
 * Every response carries Date, Content-Length (for HEAD what GET would
 * send, without the body), X-Pid and X-Worker.  Keep-alive (HTTP/1.1, and
 * HTTP/1.0 with "Connection: keep-alive"), pipelining (answers in request
 * order: a /sleep holds back the answers after it), "Expect: 100-continue",
 * request bodies by Content-Length or chunked (unknown chunk extensions
 * ignored, RFC 9112 7.1.1), read and dropped.  Answered, then closed: 400
 * for a malformed request, 413 for a body over HTTP_MAX_BODY, 431 for a
 * request line and headers over HTTP_MAX_HEADERS, 417 for an expectation
 * other than 100-continue, 505 for a version other than 1.x, 408 for a
 * request that did not arrive in time.
 *
 * Worker arguments (after `--` on forkpool's command line):
 *   --header-timeout SEC (10)  the request line and headers must have
 *                              arrived SEC after the request's first byte
 *                              (after the accept, for a connection's first
 *                              request), however they trickle in; the
 *                              body then has SEC again, from the end of
 *                              the headers
 *   --idle-timeout SEC (5)     a kept-alive connection waiting for its next
 *                              request is closed after SEC; so is one whose
 *                              peer took none of its answers for SEC
 *
 * The path of a request.  evhttp made about 7 syscalls per request (its
 * bufferevent switched the write event on and off for every response, 4
 * epoll_ctl, plus FIONREAD, readv, writev).  Here a connection has one
 * EV_READ event, added once.  A read is one recv() into a buffer all
 * connections share; the requests in it are parsed and answered into the
 * connection's output buffer, which one send() writes.  An EV_WRITE event
 * is added only when the socket is full, and removed once it drained.  So
 * a kept-alive connection costs recv, send and a share of an epoll_wait
 * per request, and no allocation: buffers are the connection's, reused.
 *
 * Flow control.  llhttp pauses at the end of every request
 * (on_message_complete), which is answered then, so answers keep their
 * order.  Parsing stops (the rest of the read is kept in the connection's
 * input buffer, and the connection is not read) while a /sleep waits, while
 * more than HTTP_OUT_HIGH of answers wait for a peer that does not read
 * them (until they are down to HTTP_OUT_LOW), and after an answer that
 * closes the connection.  A flood of pipelined requests from a peer that
 * never reads holds at most HTTP_OUT_HIGH plus one read.
 *
 * SIGTERM: stop accepting (free the acceptors: this worker's copies of the
 * listeners are closed), finish the requests in flight (sleeps too), and
 * answer every request that still arrives on a kept-alive connection with
 * "Connection: close", unless more of the client's input already waits
 * (pipelined, in our buffer or in the socket): then it goes into the last
 * answer only.  A connection waiting for a request (a kept-alive one, or
 * one that never sent any) is closed once it has been idle for
 * WK_STOP_GRACE (common.h) after the stop.  A client sending requests
 * back to back therefore never has one cut off: it is told to go away in
 * an answer, never by a close racing its next request.  No event of the
 * worker outlives its last connection, so fpool_worker_loop() then
 * returns.
 * SIGINT: everything is closed at once.
 *
 * It uses only the public API, as any worker written outside the tree.
 * This file is the worker: its arguments, its start and its stop.  The
 * rest is in workers/http/ (see http-int.h there).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
/* Not used here, but tests/fuzz/fuzz-http.c includes this file and
 * relies on its headers for memcmp(), strerror() and close(). */
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "http/http-int.h"

/* Worker arguments, parsed by setup() before on_start makes the state. */
static double opt_header_timeout = HTTP_HEADER_TIMEOUT;
static double opt_idle_timeout = HTTP_IDLE_TIMEOUT;

/* ---- The worker ------------------------------------------------------- */

static int http_setup(struct fpool_worker *w, int argc, char **argv)
{
	(void)w;
	opt_header_timeout = HTTP_HEADER_TIMEOUT;
	opt_idle_timeout = HTTP_IDLE_TIMEOUT;
	for (int i = 1; i < argc; i++) {
		static const char *const names[] = { "--header-timeout",
						     "--idle-timeout" };
		double *dest[] = { &opt_header_timeout, &opt_idle_timeout };
		bool known = false;

		for (size_t k = 0; k < 2 && !known; k++) {
			bool missing = false;
			const char *v = wk_flag_value(argc, argv, &i, names[k],
						      &missing);
			int r;

			if (missing) {
				fpool_log(FPOOL_LOG_ERROR,
					  "http: %s: missing value (seconds, "
					  "e.g. 10 or 500ms)",
					  names[k]);
				return -EINVAL;
			}
			if (v == NULL)
				continue;
			known = true;
			r = fpool_duration_parse(v, dest[k]);
			if (r != 0) {
				fpool_log(FPOOL_LOG_ERROR,
					  "http: %s: '%s' is not a duration "
					  "(more than 0, at most a week: "
					  "10, 2.5, 500ms, 2s, 1.5m): %s",
					  names[k], v, fpool_strerror(r));
				return -EINVAL;
			}
		}
		if (!known) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: unknown worker argument '%s' (the "
				  "http worker takes --header-timeout SEC "
				  "and --idle-timeout SEC)",
				  argv[i]);
			return -EINVAL;
		}
	}
	return 0;
}

static void http_close_all(struct http *h)
{
	wk_accept_stop(h->acceptors, &h->nacceptors);
	while (h->conns != NULL)
		conn_free(h->conns);
}

static int http_on_start(struct fpool_worker *w, void *arg)
{
	struct http *h = calloc(1, sizeof(*h));
	size_t n;

	(void)arg;
	fpool_worker_listeners(w, &n); /* acceptors[] has room for each */
	if (h == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory");
		return -ENOMEM;
	}
	h->w = w;
	h->base = fpool_worker_base(w);
	fpool_worker_set_data(w, h);
	h->header_timeout = opt_header_timeout;
	h->idle_timeout = opt_idle_timeout;
	h->event_size = (event_get_struct_event_size() + 15) & ~(size_t)15;
	h->ident_len = (size_t)snprintf(
		h->ident, sizeof(h->ident), "X-Pid: %d\r\nX-Worker: %u\r\n",
		(int)fpool_worker_pid(w), fpool_worker_id(w));
	h->hello_len = (size_t)snprintf(
		h->hello, sizeof(h->hello), "hello from worker %u pid %d\n",
		fpool_worker_id(w), (int)fpool_worker_pid(w));
	h->rbuf = malloc(HTTP_READ_SIZE);
	h->acceptors = calloc(n ? n : 1, sizeof(*h->acceptors));
	if (h->rbuf == NULL || h->acceptors == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory");
		return -ENOMEM;
	}

	parser_setup();
	if (wk_accept_all(w, "http", h->acceptors, &h->nacceptors, accept_cb,
			  h) != 0)
		return -EIO;
	fpool_log(FPOOL_LOG_DEBUG,
		  "http: header timeout %g s, idle timeout %g s, llhttp "
		  "%d.%d.%d%s",
		  h->header_timeout, h->idle_timeout, LLHTTP_VERSION_MAJOR,
		  LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH,
		  fix_ext_semicolon ? " (with the chunk extension fix)" : "");
	return 0;
}

static int http_on_stop(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);

	(void)arg;
	if (h == NULL)
		return 0;
	h->stopping = true;
	h->now = mono_now();
	h->stop_at = h->now;
	/* Closes this worker's copies of the listeners only: the master and
	 * the other workers keep theirs. */
	wk_accept_stop(h->acceptors, &h->nacceptors);
	/* A connection waiting for a request now has the stop grace. */
	for (struct conn *c = h->conns, *next; c != NULL; c = next) {
		next = c->next;
		conn_arm(c);
		if (c->broken)
			conn_free(c);
	}
	return 0;
}

static int http_main(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);
	int r;

	(void)arg;
	r = fpool_worker_loop(w);
	if (r != 0)
		fpool_log(FPOOL_LOG_ERROR, "http: the loop failed: %s",
			  fpool_strerror(r));
	/* After an interrupt (or a loop failure) connections may remain;
	 * after a graceful stop there are none left. */
	http_close_all(h);
	return r == 0 ? 0 : 1;
}

static int http_on_shutdown(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);

	(void)arg;
	if (h != NULL) {
		http_close_all(h); /* main may not have run */
		free(h->acceptors);
		free(h->rbuf);
		free(h);
	}
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_http_worker = {
	.name = "http",
	.description = "HTTP/1.1 (GET /, GET /sleep?ms=N) on every listener",
	.setup = http_setup,
	.on_start = http_on_start,
	.on_stop = http_on_stop,
	.on_shutdown = http_on_shutdown,
	.main = http_main,
};
