/*
 * bare-evhttp: the handler of workers/http.c's GET / (the same body and the
 * same headers: Content-Type, Content-Length, X-Pid, X-Worker) with the
 * same evhttp settings, in N processes forked after one listen() on a
 * shared socket, and nothing else: no master loop, no heartbeats, no
 * respawn.  It is the "zero framework overhead" baseline of scripts/bench.
 *
 *   bare-evhttp [-w N] [-b HOST:PORT]        (default: 2, 127.0.0.1:8080)
 *
 * SIGTERM or SIGINT to the parent ends the children (SIGKILL) and then the
 * parent.  A child that dies is not replaced.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#define MAX_WORKERS 1024

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

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	stop = sig;
}

static int listen_on(const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(addr, ':');
	int one = 1, fd;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
		fprintf(stderr, "bare-evhttp: bad address %s\n", addr);
		return -1;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "bare-evhttp: bad address %s\n", addr);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		fprintf(stderr, "bare-evhttp: %s: %s\n", addr, strerror(errno));
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:8080";
	unsigned n = 2;
	pid_t pids[MAX_WORKERS];
	struct sigaction sa = { .sa_handler = on_signal };
	int opt, fd;

	while ((opt = getopt(argc, argv, "w:b:")) != -1) {
		if (opt == 'w') {
			n = (unsigned)atoi(optarg);
		} else if (opt == 'b') {
			addr = optarg;
		} else {
			fprintf(stderr, "usage: bare-evhttp [-w N] "
					"[-b HOST:PORT]\n");
			return 2;
		}
	}
	if (n < 1 || n > MAX_WORKERS) {
		fprintf(stderr, "bare-evhttp: -w takes 1..%d\n", MAX_WORKERS);
		return 2;
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	fd = listen_on(addr);
	if (fd < 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("bare-evhttp: fork");
			n = i;
			stop = SIGTERM;
			break;
		}
		if (pids[i] == 0)
			_exit(child(fd, i));
	}
	while (!stop) {
		pid_t p = wait(NULL);

		if (p < 0 && errno == ECHILD)
			break;
	}
	for (unsigned i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return 0;
}
