/*
 * The control socket: a unix stream socket (mode 0600, peers checked with
 * SO_PEERCRED) that speaks one JSON object per line each way, as
 * anaconda's JsonServer does.  Every request carries a hex "id" that the
 * reply echoes:
 *
 *   {"id":"9f2c","cmd":"status"}  ->  {"id":"9f2c","ok":true,"result":{...}}
 *                                 or  {"id":"9f2c","ok":false,"error":"..."}
 *
 * A client can never block the master: reads and writes go through
 * bufferevents, a request over FPOOL_CONTROL_MAX is refused, a client
 * whose replies pile up is not read until they are written (and dropped
 * if it reads nothing for CONTROL_STALL seconds), at most
 * FPOOL_CONTROL_CLIENTS are connected at once.  Every request read gets
 * its whole reply, in order, also after the client shut its side down;
 * and a command is carried out when it is read, whether or not its reply
 * can be delivered.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <yajl/yajl_gen.h>

#include "fpool-int.h"

/* Replies waiting to be written: past this, no further request of that
 * client is read until they are out. */
#define CONTROL_OUT_HIGH (256 * 1024)
/* Seconds a client may leave its replies unread, or send nothing. */
#define CONTROL_STALL 10
#define CONTROL_IDLE  300
/* Event lines an `events` client may leave unread: past this it is
 * dropped, never waited for. */
#define EVENTS_OUT_MAX (256 * 1024)

struct fpool__client {
	struct fpool__control *ctl;
	struct bufferevent *bev;
	struct fpool__client *prev, *next;
	enum {
		CLIENT_OPEN,	/* reading requests */
		CLIENT_EOF,	/* the client shut its side: answer, close */
		CLIENT_HANG_UP, /* a request too large: answer, shut down */
		CLIENT_DISCARD, /* shut down: drop what comes until EOF */
	} state;
	bool watching; /* `events`: gets every event line, sends nothing */
};

struct fpool__control {
	struct fpool_pool *pool;
	struct fpool_acceptor *acceptor;
	char *path;
	struct fpool__client *clients;
	unsigned nclients;
	unsigned nwatching; /* clients with `watching` */
	/* The client whose `upgrade` is under way: answered when it is
	 * done (fpool__control_answer), and not read until then. */
	struct fpool__client *waiter;
};

/* ---- clients ------------------------------------------------------------ */

static void client_free(struct fpool__client *c)
{
	if (c->ctl->waiter == c)
		c->ctl->waiter = NULL;
	if (c->watching)
		c->ctl->nwatching--;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->ctl->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->ctl->nclients--;
	bufferevent_free(c->bev);
	free(c);
}

/* Write what the client's replies hold now, without waiting (the loop
 * may end before the bufferevent would). */
static void client_write_now(struct fpool__client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int fd = bufferevent_getfd(c->bev);

	/* A socket bufferevent keeps the start of its output frozen so
	 * that only it drains it; this one write is ours.  send() with
	 * MSG_NOSIGNAL: at the end of a run SIGPIPE may have its default
	 * again, and a client gone must not kill the master. */
	evbuffer_unfreeze(out, 1);
	while (evbuffer_get_length(out) > 0) {
		size_t n = evbuffer_get_contiguous_space(out);
		ssize_t w = send(fd, evbuffer_pullup(out, (ssize_t)n), n,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w <= 0)
			break;
		evbuffer_drain(out, (size_t)w);
	}
	evbuffer_freeze(out, 1);
}

static void start_watching(struct fpool__client *c);

/*
 * Answer the complete request lines received, as long as the replies do
 * not pile up; then decide what the connection waits for.  Returns false
 * if the client was freed.
 */
static bool client_process(struct fpool__client *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct timeval tv = { 1, 0 };
	bool stop, graceful = true;
	size_t len;
	char *line;

	if (c->state == CLIENT_DISCARD || c->watching) {
		/* A watcher's further bytes are not requests; its EOF ends
		 * nothing (it may still read).  It goes when a write fails
		 * or its lines pile up. */
		evbuffer_drain(in, evbuffer_get_length(in));
		return true;
	}
	if (c == c->ctl->waiter) {
		bufferevent_disable(c->bev, EV_READ);
		return true;
	}
	while (c->state != CLIENT_HANG_UP &&
	       evbuffer_get_length(out) < CONTROL_OUT_HIGH &&
	       (line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
		size_t before = evbuffer_get_length(out);

		fpool__control_handle(c->ctl->pool, line, len, out, &stop,
				      &graceful);
		free(line);
		if (c->ctl->pool->events_asked) {
			c->ctl->pool->events_asked = false;
			start_watching(c);
			return true;
		}
		if (evbuffer_get_length(out) == before) {
			/* Only an `upgrade` under way leaves its reply for
			 * later: this client waits for it, and sends
			 * nothing more until then. */
			c->ctl->waiter = c;
			bufferevent_disable(c->bev, EV_READ);
			return true;
		}
		if (stop) {
			/* Carried out now, whatever becomes of the reply;
			 * but give the reply its chance first. */
			client_write_now(c);
			fpool_log(FPOOL_LOG_INFO, "control: stop (%s)",
				  graceful ? "graceful" : "interrupt");
			fpool_pool_stop(c->ctl->pool, graceful);
		}
	}
	if (c->state == CLIENT_OPEN &&
	    evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF).pos < 0 &&
	    evbuffer_get_length(in) > FPOOL_CONTROL_MAX) {
		/* No newline within the limit: answer and hang up, since
		 * the rest of that line cannot be told from a new request. */
		evbuffer_add_printf(out, "{\"id\":null,\"ok\":false,\"error\":"
					 "\"request too large\"}\n");
		evbuffer_drain(in, evbuffer_get_length(in));
		c->state = CLIENT_HANG_UP;
	}
	if (c->state == CLIENT_EOF &&
	    evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF).pos < 0) {
		/* Every request is answered (a last one without its newline
		 * is not a request).  Close once the replies are out. */
		evbuffer_drain(in, evbuffer_get_length(in));
		if (evbuffer_get_length(out) == 0) {
			client_free(c);
			return false;
		}
	}
	if (c->state == CLIENT_HANG_UP && evbuffer_get_length(out) == 0) {
		/* Closing with the client's bytes unread would reset the
		 * connection before it reads our answer; shut our side and
		 * discard what comes until it closes (or a second passes). */
		if (shutdown(bufferevent_getfd(c->bev), SHUT_WR) < 0)
			fpool__log_errno(FPOOL_LOG_DEBUG, errno,
					 "control: shutdown");
		c->state = CLIENT_DISCARD;
		bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
		bufferevent_set_timeouts(c->bev, &tv, NULL);
		bufferevent_enable(c->bev, EV_READ);
		return true;
	}
	/* Read more only when it can be answered. */
	if (c->state == CLIENT_OPEN &&
	    evbuffer_get_length(out) < CONTROL_OUT_HIGH)
		bufferevent_enable(c->bev, EV_READ);
	else
		bufferevent_disable(c->bev, EV_READ);
	return true;
}

/* `events` was answered: from now on the client gets the event lines. */
static void start_watching(struct fpool__client *c)
{
	struct timeval stall = { CONTROL_STALL, 0 };

	c->watching = true;
	c->ctl->nwatching++;
	/* No idle timeout (it sends nothing); unread lines for
	 * CONTROL_STALL s still drop it. */
	bufferevent_set_timeouts(c->bev, NULL, &stall);
	bufferevent_enable(c->bev, EV_READ);
	evbuffer_drain(bufferevent_get_input(c->bev),
		       evbuffer_get_length(bufferevent_get_input(c->bev)));
}

bool fpool__control_watched(const struct fpool_pool *pool)
{
	return pool->control != NULL && pool->control->nwatching > 0;
}

void fpool__control_broadcast(struct fpool_pool *pool, const char *line,
			      size_t len)
{
	struct fpool__client *c, *next;

	if (pool->control == NULL)
		return;
	for (c = pool->control->clients; c != NULL; c = next) {
		struct evbuffer *out = bufferevent_get_output(c->bev);

		next = c->next;
		if (!c->watching)
			continue;
		if (evbuffer_get_length(out) + len + 1 > EVENTS_OUT_MAX) {
			fpool_log(FPOOL_LOG_WARNING,
				  "control: dropping an events client that "
				  "left %zu bytes of events unread",
				  evbuffer_get_length(out));
			client_free(c);
			continue;
		}
		if (evbuffer_add(out, line, len) != 0 ||
		    evbuffer_add(out, "\n", 1) != 0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "control: out of memory; dropping an events "
				  "client");
			client_free(c);
		}
	}
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_process(arg);
}

/* The replies were written (the output drained). */
static void client_write_cb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_process(arg);
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct fpool__client *c = arg;

	(void)bev;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    c->watching) {
		/* Gone, or only shut its side (it may still read)?  An empty
		 * line tells: to a closed peer the write fails, and the
		 * error frees the client; a reader skips it. */
		if (evbuffer_add(bufferevent_get_output(c->bev), "\n", 1) != 0)
			client_free(c);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    c->state != CLIENT_DISCARD) {
		/* Shut down for writing: answer what came, then close. */
		if (c->state == CLIENT_OPEN)
			c->state = CLIENT_EOF;
		client_process(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT && c->state != CLIENT_DISCARD)
		fpool_log(FPOOL_LOG_WARNING,
			  "control: dropping a client that %s for %d s",
			  (what & BEV_EVENT_WRITING) ? "left its replies unread"
						     : "sent nothing",
			  (what & BEV_EVENT_WRITING) ? CONTROL_STALL
						     : CONTROL_IDLE);
	/* An error or a timeout: nothing more can be delivered. */
	client_free(c);
}

/* A client on fd, as accept_cb makes one.  The client, or NULL. */
static struct fpool__client *client_new(struct fpool__control *ctl, int fd)
{
	struct timeval idle = { CONTROL_IDLE, 0 }, stall = { CONTROL_STALL, 0 };
	struct fpool__client *c = calloc(1, sizeof(*c));

	if (c == NULL ||
	    (c->bev = bufferevent_socket_new(ctl->pool->base, fd,
					     BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		free(c);
		return NULL;
	}
	c->ctl = ctl;
	ctl->nclients++;
	c->next = ctl->clients;
	if (ctl->clients != NULL)
		ctl->clients->prev = c;
	ctl->clients = c;
	/* Read at most a little past the limit before judging a line. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, FPOOL_CONTROL_MAX + 2);
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb,
			  client_event_cb, c);
	bufferevent_set_timeouts(c->bev, &idle, &stall);
	return c;
}

static void accept_cb(struct fpool_acceptor *a, int fd,
		      const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct fpool__control *ctl = arg;
	struct fpool__client *c;
	struct ucred cred;
	socklen_t clen = sizeof(cred);

	(void)a;
	(void)sa;
	(void)salen;
	/* Only our own user (or root) may steer the pool, whatever the
	 * socket file's mode ends up being. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != geteuid() && cred.uid != 0)) {
		static const char no[] = "{\"id\":null,\"ok\":false,\"error\":"
					 "\"permission denied\"}\n";

		fpool_log(FPOOL_LOG_WARNING,
			  "control: refused a client (uid %d)",
			  clen == sizeof(cred) ? (int)cred.uid : -1);
		if (send(fd, no, sizeof(no) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) <
		    0)
			fpool__log_errno(FPOOL_LOG_DEBUG, errno,
					 "control: telling a refused client");
		close(fd);
		return;
	}
	if (ctl->nclients >= FPOOL_CONTROL_CLIENTS) {
		static const char busy[] =
			"{\"id\":null,\"ok\":false,\"error\":"
			"\"too many control clients\"}\n";

		fpool_log(FPOOL_LOG_WARNING,
			  "control: refused a client: %d are connected",
			  FPOOL_CONTROL_CLIENTS);
		if (send(fd, busy, sizeof(busy) - 1,
			 MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			fpool__log_errno(FPOOL_LOG_DEBUG, errno,
					 "control: telling a refused client");
		close(fd);
		return;
	}
	c = client_new(ctl, fd);
	if (c == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "control: out of memory");
		close(fd);
		return;
	}
	bufferevent_enable(c->bev, EV_READ);
}

int fpool__control_open(struct fpool_pool *pool, const char *path)
{
	struct fpool__control *ctl = calloc(1, sizeof(*ctl));
	struct fpool__addr a;
	char spec[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	mode_t mask;
	int fd, err;

	if (ctl == NULL)
		return -ENOMEM;
	snprintf(spec, sizeof(spec), "unix:%s", path);
	if (fpool__addr_parse(spec, &a, NULL) != 0) {
		free(ctl);
		return -ENAMETOOLONG;
	}
	/* Created 0600 from the start: no window where others could
	 * connect. */
	mask = umask(0177);
	err = fpool__addr_listen(&a, 64, &fd);
	umask(mask);
	if (err != 0) {
		free(ctl);
		return err;
	}
	ctl->pool = pool;
	ctl->path = strdup(path);
	if (ctl->path == NULL ||
	    fpool_acceptor_new(&ctl->acceptor, pool->base, fd,
			       FPOOL_ACCEPT_CLOSE, accept_cb, ctl) != 0) {
		close(fd);
		unlink(path);
		free(ctl->path);
		free(ctl);
		return -ENOMEM;
	}
	pool->control = ctl;
	fpool_log(FPOOL_LOG_INFO, "control socket at %s", path);
	return 0;
}

void fpool__control_close(struct fpool_pool *pool, bool owner)
{
	struct fpool__control *ctl = pool->control;

	if (ctl == NULL)
		return;
	while (ctl->clients != NULL) {
		/* The master's last word to a client (the reply to `stop`)
		 * gets its chance. */
		if (owner)
			client_write_now(ctl->clients);
		client_free(ctl->clients);
	}
	fpool_acceptor_free(ctl->acceptor);
	if (owner && unlink(ctl->path) < 0 && errno != ENOENT)
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "removing %s",
				 ctl->path);
	free(ctl->path);
	free(ctl);
	pool->control = NULL;
}

/* ---- binary upgrade -------------------------------------------------- */

int fpool__control_fd(const struct fpool_pool *pool)
{
	return pool->control != NULL
		       ? fpool_acceptor_fd(pool->control->acceptor)
		       : -1;
}

int fpool__control_waiter_fd(const struct fpool_pool *pool)
{
	const struct fpool__control *ctl = pool->control;

	return ctl != NULL && ctl->waiter != NULL
		       ? bufferevent_getfd(ctl->waiter->bev)
		       : -1;
}

void fpool__control_flush_clients(struct fpool_pool *pool)
{
	if (pool->control == NULL)
		return;
	for (struct fpool__client *c = pool->control->clients; c != NULL;
	     c = c->next)
		client_write_now(c);
}

int fpool__control_adopt(struct fpool_pool *pool, const char *path, int fd,
			 int waiter_fd)
{
	struct fpool__control *ctl = calloc(1, sizeof(*ctl));

	if (ctl == NULL)
		return -ENOMEM;
	ctl->pool = pool;
	ctl->path = strdup(path);
	if (ctl->path == NULL ||
	    fpool_acceptor_new(&ctl->acceptor, pool->base, fd,
			       FPOOL_ACCEPT_CLOSE, accept_cb, ctl) != 0) {
		free(ctl->path);
		free(ctl);
		return -ENOMEM;
	}
	pool->control = ctl;
	if (waiter_fd >= 0) {
		ctl->waiter = client_new(ctl, waiter_fd);
		if (ctl->waiter == NULL) {
			fpool_log(FPOOL_LOG_WARNING,
				  "control: out of memory; the client that "
				  "asked for the upgrade gets no answer");
			close(waiter_fd);
		}
	}
	fpool_log(FPOOL_LOG_INFO, "control socket at %s (handed over)", path);
	return 0;
}

void fpool__control_answer(struct fpool_pool *pool, const char *id,
			   const char *error, const char *result)
{
	struct fpool__client *c;
	yajl_gen g;
	const unsigned char *buf;
	size_t n;

	if (pool->control == NULL || (c = pool->control->waiter) == NULL)
		return;
	pool->control->waiter = NULL;
	g = yajl_gen_alloc(NULL);
	if (g == NULL) {
		evbuffer_add_printf(bufferevent_get_output(c->bev),
				    "{\"id\":null,\"ok\":false,"
				    "\"error\":\"out of memory\"}\n");
	} else {
		yajl_gen_map_open(g);
		fpool__json_str(g, "id");
		fpool__json_str(g, id);
		fpool__json_str(g, "ok");
		yajl_gen_bool(g, error == NULL);
		fpool__json_str(g, error != NULL ? "error" : "result");
		if (error != NULL)
			fpool__json_str(g, error);
		else /* already JSON: written verbatim (commands.c) */
			yajl_gen_number(g, result, strlen(result));
		yajl_gen_map_close(g);
		yajl_gen_get_buf(g, &buf, &n);
		evbuffer_add(bufferevent_get_output(c->bev), buf, n);
		evbuffer_add(bufferevent_get_output(c->bev), "\n", 1);
		yajl_gen_free(g);
	}
	bufferevent_enable(c->bev, EV_WRITE);
	/* Its further requests, and its EOF, are read from now on. */
	client_process(c);
}
