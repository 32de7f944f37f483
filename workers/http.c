/*
 * http: an HTTP/1.1 server on libevent's evhttp over every listener the
 * worker inherits.  Keep-alive and pipelining as evhttp does them.
 *
 *   GET /              200 "hello from worker ID pid PID"
 *   GET /sleep?ms=N    200 after N ms (0..60000, else 400), without
 *                      blocking the loop: one timer per request
 *   other paths        404; methods other than GET and HEAD: 405
 * Every response we build carries X-Pid and X-Worker headers.
 *
 * SIGTERM: stop accepting (this worker's copies of the listeners are
 * closed), finish the requests in flight, and answer every request that
 * still arrives on a kept-alive connection with "Connection: close", so
 * evhttp closes the connection right after that response.  A connection
 * that stays idle is closed once it has been idle for HTTP_STOP_GRACE.
 * A client that sends requests back to back therefore never has one cut
 * off: it is told to go away in a response, never by a close racing its
 * next request.  Once the last connection is gone, the worker has no
 * event left and fpool_worker_loop() returns.  SIGINT: evhttp_free()
 * closes everything at once.
 *
 * evhttp keeps its connections to itself, so the worker learns of a
 * connection from its first request (evhttp_request_get_connection) and
 * hears of its end through evhttp_connection_set_closecb().  A connection
 * that never sent a request is bounded by the server-wide idle timeout.
 *
 * It uses only the public API, as any worker written outside the tree.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "forkpool.h"

/* Seconds a connection may stay idle (before its first request or between
 * two) while the worker runs.  It also bounds, after SIGTERM, a connection
 * that never sent a request. */
#define HTTP_IDLE_TIMEOUT 5
/* Seconds an idle kept-alive connection stays open after SIGTERM. */
#define HTTP_STOP_GRACE 1
#define HTTP_SLEEP_MAX	60000 /* ms */
/* After an accept error such as EMFILE, accepting pauses this long: the
 * listener stays readable, so retrying at once would only spin. */
#define HTTP_ACCEPT_PAUSE_MS 100
#define HTTP_MAX_HEADERS     (16 * 1024)
#define HTTP_MAX_BODY	     (64 * 1024)

struct http;

/* A /sleep request waiting for its timer. */
struct http_sleep {
	struct event *ev;
	struct evhttp_request *req;
	struct http *h;
	unsigned long ms;
	struct http_sleep *prev, *next;
};

struct http {
	struct fpool_worker *w;
	struct evhttp *evh;
	struct evhttp_bound_socket **bound;
	size_t nbound;
	/* Connections that sent a request, indexed by their fd: a socket's
	 * fd is unique while it is open, and evhttp calls the close callback
	 * (which clears the slot) before it closes the fd. */
	struct evhttp_connection **conns;
	size_t nconns; /* slots in conns */
	struct http_sleep *sleeps;
	struct event *resume_ev; /* ends an accept pause */
	bool stopping;
	char pid[16], id[16];
};

/* evhttp owns the listeners' callback argument, so their error callback
 * finds the worker's state here.  A worker process runs one server. */
static struct http *the_http;

static void conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct http *h = arg;
	int fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));

	if (fd >= 0 && (size_t)fd < h->nconns && h->conns[fd] == evcon) {
		h->conns[fd] = NULL;
		return;
	}
	/* Not where its fd says: look everywhere, never keep a freed one. */
	for (size_t i = 0; i < h->nconns; i++)
		if (h->conns[i] == evcon)
			h->conns[i] = NULL;
}

/* Remember the connection of a request, once. */
static void conn_track(struct http *h, struct evhttp_connection *evcon)
{
	struct timeval grace = { HTTP_STOP_GRACE, 0 };
	int fd;

	if (evcon == NULL)
		return;
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd < 0)
		return;
	if ((size_t)fd >= h->nconns) {
		size_t n = h->nconns ? h->nconns : 64;
		struct evhttp_connection **v;

		while (n <= (size_t)fd)
			n *= 2;
		v = realloc(h->conns, n * sizeof(*v));
		if (v == NULL) {
			/* It still closes after HTTP_IDLE_TIMEOUT when idle,
			 * and is told to close in its responses after a
			 * stop; only the shorter stop grace is lost. */
			fpool_log(FPOOL_LOG_WARNING,
				  "http: out of memory; connection on fd %d "
				  "not tracked",
				  fd);
			return;
		}
		memset(v + h->nconns, 0, (n - h->nconns) * sizeof(*v));
		h->conns = v;
		h->nconns = n;
	}
	if (h->conns[fd] == evcon)
		return;
	h->conns[fd] = evcon;
	evhttp_connection_set_closecb(evcon, conn_close_cb, h);
	if (h->stopping)
		evhttp_connection_set_timeout_tv(evcon, &grace);
}

/*
 * Whether more bytes of the client are waiting on the connection of `req`:
 * pipelined requests evhttp read already, or bytes still in the socket.
 * After a stop, such a connection is kept open for them: "Connection:
 * close" goes into the response to the last request only.
 */
static bool more_input(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev;
	int fd, n = 0;

	if (evcon == NULL)
		return false;
	bev = evhttp_connection_get_bufferevent(evcon);
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		return true;
	fd = bufferevent_getfd(bev);
	if (fd < 0)
		return false;
	if (ioctl(fd, FIONREAD, &n) < 0) {
		fpool_log(FPOOL_LOG_WARNING,
			  "http: ioctl(FIONREAD) on fd %d: %s", fd,
			  strerror(errno));
		return false;
	}
	return n > 0;
}

/* Send a complete response with a text body (not sent for HEAD). */
static void reply(struct http *h, struct evhttp_request *req, int code,
		  const char *reason, const char *body)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	size_t len = strlen(body);
	char clen[24];

	snprintf(clen, sizeof(clen), "%zu", len);
	/* Content-Length explicitly, so that HEAD says what GET would send
	 * (evhttp leaves it out when there is no body). */
	if (evhttp_add_header(hdr, "Content-Type",
			      "text/plain; charset=utf-8") != 0 ||
	    evhttp_add_header(hdr, "Content-Length", clen) != 0 ||
	    evhttp_add_header(hdr, "X-Pid", h->pid) != 0 ||
	    evhttp_add_header(hdr, "X-Worker", h->id) != 0 ||
	    (h->stopping && !more_input(req) &&
	     evhttp_add_header(hdr, "Connection", "close") != 0)) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot add response headers "
					   "(out of memory)");
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
	    evbuffer_add(evhttp_request_get_output_buffer(req), body, len) !=
		    0) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot buffer a response "
					   "(out of memory)");
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req, code, reason, NULL);
}

static void sleep_free(struct http_sleep *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		s->h->sleeps = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	event_free(s->ev);
	free(s);
}

static void sleep_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_sleep *s = arg;
	struct http *h = s->h;
	struct evhttp_request *req = s->req;
	char body[64];

	(void)fd;
	(void)what;
	snprintf(body, sizeof(body), "slept %lu ms\n", s->ms);
	sleep_free(s);
	reply(h, req, HTTP_OK, "OK", body);
}

/* "ms=N" with 0 <= N <= HTTP_SLEEP_MAX, digits only; -1 otherwise. */
static long sleep_ms(struct evhttp_request *req)
{
	const char *query =
		evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq params = { 0 };
	const char *v;
	long ms = -1;

	if (query == NULL || evhttp_parse_query_str(query, &params) != 0)
		return -1;
	v = evhttp_find_header(&params, "ms");
	if (v != NULL && *v != '\0' && strlen(v) <= 5 &&
	    strspn(v, "0123456789") == strlen(v)) {
		ms = strtol(v, NULL, 10);
		if (ms > HTTP_SLEEP_MAX)
			ms = -1;
	}
	evhttp_clear_headers(&params);
	return ms;
}

static void sleep_start(struct http *h, struct evhttp_request *req)
{
	long ms = sleep_ms(req);
	struct timeval tv;
	struct http_sleep *s;

	if (ms < 0) {
		reply(h, req, HTTP_BADREQUEST, "Bad Request",
		      "ms must be an integer from 0 to 60000\n");
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory for /sleep");
		reply(h, req, HTTP_INTERNAL, "Internal Server Error",
		      "out of memory\n");
		return;
	}
	s->h = h;
	s->req = req;
	s->ms = (unsigned long)ms;
	s->ev = evtimer_new(fpool_worker_base(h->w), sleep_done_cb, s);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if (s->ev == NULL || evtimer_add(s->ev, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot arm a /sleep timer");
		if (s->ev != NULL)
			event_free(s->ev);
		free(s);
		reply(h, req, HTTP_INTERNAL, "Internal Server Error",
		      "cannot arm a timer\n");
		return;
	}
	s->next = h->sleeps;
	if (h->sleeps != NULL)
		h->sleeps->prev = s;
	h->sleeps = s;
}

static void request_cb(struct evhttp_request *req, void *arg)
{
	struct http *h = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char body[80];

	fpool_worker_count_requests(h->w, 1);
	conn_track(h, evhttp_request_get_connection(req));
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		if (evhttp_add_header(evhttp_request_get_output_headers(req),
				      "Allow", "GET, HEAD") != 0)
			fpool_log(FPOOL_LOG_WARNING, "http: cannot add the "
						     "Allow header");
		reply(h, req, 405, "Method Not Allowed",
		      "method not allowed\n");
	} else if (path != NULL && strcmp(path, "/") == 0) {
		snprintf(body, sizeof(body), "hello from worker %s pid %s\n",
			 h->id, h->pid);
		reply(h, req, HTTP_OK, "OK", body);
	} else if (path != NULL && strcmp(path, "/sleep") == 0) {
		sleep_start(h, req);
	} else {
		reply(h, req, HTTP_NOTFOUND, "Not Found", "not found\n");
	}
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;

	(void)fd;
	(void)what;
	for (size_t i = 0; i < h->nbound; i++)
		if (evconnlistener_enable(
			    evhttp_bound_socket_get_listener(h->bound[i])) != 0)
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot resume accepting on fd %d",
				  (int)evhttp_bound_socket_get_fd(h->bound[i]));
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct http *h = the_http;
	struct timeval pause = { 0, HTTP_ACCEPT_PAUSE_MS * 1000 };
	int err = EVUTIL_SOCKET_ERROR();

	(void)l;
	(void)arg;
	/* EMFILE and friends: the connection stays queued; try again after
	 * a pause rather than spin on a listener that stays readable. */
	fpool_log(FPOOL_LOG_WARNING,
		  "http: accept failed: %s; pausing accepts for %d ms",
		  evutil_socket_error_to_string(err), HTTP_ACCEPT_PAUSE_MS);
	if (h == NULL || h->stopping)
		return;
	for (size_t i = 0; i < h->nbound; i++)
		evconnlistener_disable(
			evhttp_bound_socket_get_listener(h->bound[i]));
	if (event_add(h->resume_ev, &pause) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot arm the accept pause "
					   "timer; accepting again at once");
		resume_cb(-1, 0, h);
	}
}

static void close_listeners(struct http *h)
{
	/* LEV_OPT_CLOSE_ON_FREE closes this worker's copy only: the master
	 * and the other workers keep the socket. */
	for (size_t i = 0; i < h->nbound; i++)
		evhttp_del_accept_socket(h->evh, h->bound[i]);
	h->nbound = 0;
	if (h->resume_ev != NULL)
		event_del(h->resume_ev);
}

/* Free the server, its listeners and connections; in-flight requests are
 * dropped (an interrupt, or the end of a graceful drain). */
static void http_free_server(struct http *h)
{
	while (h->sleeps != NULL)
		sleep_free(h->sleeps);
	if (h->evh != NULL) {
		/* evhttp_free() frees the remaining bound sockets itself. */
		h->nbound = 0;
		evhttp_free(h->evh);
		h->evh = NULL;
	}
	if (h->resume_ev != NULL) {
		event_free(h->resume_ev);
		h->resume_ev = NULL;
	}
	free(h->bound);
	h->bound = NULL;
	free(h->conns);
	h->conns = NULL;
	h->nconns = 0;
}

static int http_on_start(struct fpool_worker *w, void *arg)
{
	struct http *h = calloc(1, sizeof(*h));
	struct event_base *base = fpool_worker_base(w);
	size_t n;
	const int *fds = fpool_worker_listeners(w, &n);

	(void)arg;
	if (h == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: out of memory");
		return -ENOMEM;
	}
	h->w = w;
	fpool_worker_set_data(w, h);
	the_http = h;
	snprintf(h->pid, sizeof(h->pid), "%d", (int)fpool_worker_pid(w));
	snprintf(h->id, sizeof(h->id), "%u", fpool_worker_id(w));
	h->evh = evhttp_new(base);
	h->bound = calloc(n ? n : 1, sizeof(*h->bound));
	h->resume_ev = evtimer_new(base, resume_cb, h);
	if (h->evh == NULL || h->bound == NULL || h->resume_ev == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "http: cannot create the server");
		return -ENOMEM;
	}
	evhttp_set_gencb(h->evh, request_cb, h);
	/* Every method reaches request_cb, which answers 405 itself
	 * (evhttp would answer 501 and close the connection). */
	evhttp_set_allowed_methods(
		h->evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
				EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
				EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
				EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	/* Without a timeout evhttp keeps an idle connection forever. */
	evhttp_set_timeout(h->evh, HTTP_IDLE_TIMEOUT);
	evhttp_set_max_headers_size(h->evh, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->evh, HTTP_MAX_BODY);
	for (size_t i = 0; i < n; i++) {
		/* Backlog 0: the master already called listen(). */
		struct evconnlistener *l = evconnlistener_new(
			base, NULL, NULL,
			LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
			fds[i]);
		struct evhttp_bound_socket *b;

		if (l == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot listen on fd %d", fds[i]);
			return -EIO;
		}
		b = evhttp_bind_listener(h->evh, l);
		if (b == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "http: cannot serve HTTP on fd %d", fds[i]);
			evconnlistener_free(l);
			return -EIO;
		}
		evconnlistener_set_error_cb(l, accept_error_cb);
		h->bound[h->nbound++] = b;
	}
	return 0;
}

static int http_on_stop(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);
	struct timeval grace = { HTTP_STOP_GRACE, 0 };

	(void)arg;
	h->stopping = true;
	close_listeners(h);
	/* A connection waiting for its next request is closed once it has
	 * been idle for the grace.  One busy with a request has neither a
	 * read nor a write pending, so no timer runs until its response is
	 * written, and that response says "Connection: close". */
	evhttp_set_timeout_tv(h->evh, &grace);
	for (size_t i = 0; i < h->nconns; i++)
		if (h->conns[i] != NULL)
			evhttp_connection_set_timeout_tv(h->conns[i], &grace);
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
	http_free_server(h);
	return r == 0 ? 0 : 1;
}

static int http_on_shutdown(struct fpool_worker *w, void *arg)
{
	struct http *h = fpool_worker_data(w);

	(void)arg;
	if (h != NULL) {
		http_free_server(h); /* main may not have run */
		free(h);
	}
	the_http = NULL;
	fpool_worker_set_data(w, NULL);
	return 0;
}

const struct fpool_worker_def fpool_http_worker = {
	.name = "http",
	.description = "HTTP/1.1 (GET /, GET /sleep?ms=N) on every listener",
	.on_start = http_on_start,
	.on_stop = http_on_stop,
	.on_shutdown = http_on_shutdown,
	.main = http_main,
};
