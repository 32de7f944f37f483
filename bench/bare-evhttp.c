/*
 * bare-evhttp: the handler of workers/http.c's GET / (the same body and the
 * same headers: Content-Type, Content-Length, X-Pid, X-Worker) with the
 * same evhttp settings, in N processes forked after one listen() on a
 * shared socket, and nothing else: no master loop, no heartbeats, no
 * respawn.  It is the "zero framework overhead" baseline of scripts/bench.
 *
 *   bare-evhttp [-w N] [-b HOST:PORT]        (default: 2, 127.0.0.1:8080)
 *
 * The parent and its signals: bench/bare.h.
 */
#include <sys/prctl.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "bare.h"

struct bare {
	char pid[16], id[16];
};

static void reply(struct bare *b, struct evhttp_request *req, int code,
		  const char *reason, const char *body)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);
	size_t len = strlen(body);
	char clen[24];

	snprintf(clen, sizeof(clen), "%zu", len);
	if (evhttp_add_header(hdr, "Content-Type",
			      "text/plain; charset=utf-8") != 0 ||
	    evhttp_add_header(hdr, "Content-Length", clen) != 0 ||
	    evhttp_add_header(hdr, "X-Pid", b->pid) != 0 ||
	    evhttp_add_header(hdr, "X-Worker", b->id) != 0) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
	    evbuffer_add(evhttp_request_get_output_buffer(req), body, len) !=
		    0) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_send_reply(req, code, reason, NULL);
}

static void request_cb(struct evhttp_request *req, void *arg)
{
	struct bare *b = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	char body[80];

	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		reply(b, req, 405, "Method Not Allowed",
		      "method not allowed\n");
	} else if (path != NULL && strcmp(path, "/") == 0) {
		snprintf(body, sizeof(body), "hello from worker %s pid %s\n",
			 b->id, b->pid);
		reply(b, req, HTTP_OK, "OK", body);
	} else {
		reply(b, req, HTTP_NOTFOUND, "Not Found", "not found\n");
	}
}

static int child(int fd, unsigned id)
{
	struct bare b;
	struct event_base *base;
	struct evhttp *evh;
	struct evconnlistener *l;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	snprintf(b.pid, sizeof(b.pid), "%d", (int)getpid());
	snprintf(b.id, sizeof(b.id), "%u", id);
	base = event_base_new();
	evh = base != NULL ? evhttp_new(base) : NULL;
	if (evh == NULL) {
		fprintf(stderr, "bare-evhttp: cannot create the server\n");
		return 1;
	}
	evhttp_set_gencb(evh, request_cb, &b);
	evhttp_set_allowed_methods(
		evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
			     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
			     EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
			     EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_timeout(evh, 5);
	evhttp_set_max_headers_size(evh, 16 * 1024);
	evhttp_set_max_body_size(evh, 64 * 1024);
	l = evconnlistener_new(base, NULL, NULL,
			       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
			       fd);
	if (l == NULL || evhttp_bind_listener(evh, l) == NULL) {
		fprintf(stderr, "bare-evhttp: cannot serve on fd %d\n", fd);
		return 1;
	}
	event_base_dispatch(base);
	return 0;
}

int main(int argc, char **argv)
{
	return bare_main(argc, argv, "bare-evhttp", child);
}
