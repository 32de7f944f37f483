/*
 * sockets: the master opens a listening socket on 127.0.0.1:PORT (argv[1],
 * 8080 by default) and has forkpool keep it open in the workers; each
 * serves HTTP on it with libevent's evhttp, answering "pong from #ID PID"
 * (try curl http://127.0.0.1:PORT/).  The workers are event-driven: they
 * add their events to their own loop and let forkpool run it.  On SIGTERM
 * a worker closes its copy of the socket, ends its requests and exits.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "forkpool.h"

/* Filled in by the master, then each worker has its own copy (fork). */
struct app {
	int fd;				   /* the shared listening socket */
	struct evhttp *http;		   /* this worker's HTTP server */
	struct evhttp_bound_socket *bound; /* its handle on the socket */
};

/* Every request gets the pong, and is counted: the count travels to the
 * master with the next heartbeat. */
static void pong_cb(struct evhttp_request *req, void *arg)
{
	struct fpool_worker *w = arg;

	evbuffer_add_printf(evhttp_request_get_output_buffer(req),
			    "pong from #%u %d\n", fpool_worker_id(w),
			    (int)fpool_worker_pid(w));
	evhttp_send_reply(req, 200, "OK", NULL);
	fpool_worker_count_requests(w, 1);
}

/* In the worker, before main: an HTTP server on the worker's own event
 * loop (fpool_worker_base), taking connections from the shared socket. */
static int on_start(struct fpool_worker *w, void *arg)
{
	struct app *app = arg;

	app->http = evhttp_new(fpool_worker_base(w));
	if (app->http == NULL)
		return -1;
	/* An idle keep-alive connection must not hold up a stop for long. */
	evhttp_set_timeout(app->http, 5);
	evhttp_set_gencb(app->http, pong_cb, w);
	app->bound = evhttp_accept_socket_with_handle(app->http, app->fd);
	return app->bound == NULL ? -1 : 0;
}

/* SIGTERM runs the on_stop hooks.  Removing the socket from evhttp closes
 * this worker's copy only; the loop then ends with the last connection. */
static int on_stop(struct fpool_worker *w, void *arg)
{
	struct app *app = arg;

	(void)w;
	evhttp_del_accept_socket(app->http, app->bound);
	return 0;
}

/* The event-driven main: fpool_worker_loop() runs the worker's loop until
 * the worker is stopped and its events are gone, or at once after SIGINT;
 * freeing the server then closes any connection still open. */
static int worker_main(struct fpool_worker *w, void *arg)
{
	struct app *app = arg;
	int r = fpool_worker_loop(w);

	evhttp_free(app->http);
	return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static struct app app;
	static const struct fpool_worker_def def = {
		.name = "sockets",
		.on_start = on_start,
		.on_stop = on_stop,
		.main = worker_main,
		.arg = &app,
	};
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct fpool_config cfg;
	struct fpool_pool *pool = NULL;
	int one = 1, r;

	/* CLOEXEC closes it on exec() only, not in the forked workers; with
	 * NONBLOCK a worker beaten to a connection does not block in accept. */
	app.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	sin.sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 8080);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (app.fd < 0 ||
	    setsockopt(app.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(app.fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(app.fd, SOMAXCONN) < 0) {
		perror("sockets: 127.0.0.1");
		return 1;
	}
	fpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.worker = &def;
	/* A worker closes every fd it inherits but the ones it is told to
	 * keep, so the socket must be preserved explicitly. */
	if ((r = fpool_pool_new(&pool, &cfg)) == 0 &&
	    (r = fpool_preserve_fd(pool, app.fd)) == 0)
		r = fpool_pool_run(pool);
	if (r != 0)
		fprintf(stderr, "sockets: %s\n", fpool_strerror(r));
	fpool_pool_free(pool);
	close(app.fd);
	return r == 0 ? 0 : 1;
}
