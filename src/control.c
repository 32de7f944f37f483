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
#include <yajl/yajl_tree.h>

#include "fpool-int.h"

/* Replies waiting to be written: past this, no further request of that
 * client is read until they are out. */
#define CONTROL_OUT_HIGH (256 * 1024)
/* Seconds a client may leave its replies unread, or send nothing. */
#define CONTROL_STALL 10
#define CONTROL_IDLE  300

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
};

struct fpool__control {
	struct fpool_pool *pool;
	struct fpool_acceptor *acceptor;
	char *path;
	struct fpool__client *clients;
	unsigned nclients;
};

/* ---- replies ------------------------------------------------------------ */

static bool gnum(yajl_gen g, double v)
{
	char num[64];

	snprintf(num, sizeof(num), "%.3f", v);
	return yajl_gen_number(g, num, strlen(num)) == yajl_gen_status_ok;
}

static bool gen_info(const struct fpool__proc_info *i, void *arg)
{
	yajl_gen g = arg;
	long rss = i->pid > 0 ? fpool__rss_kib(i->pid) : -1;
	bool ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		  fpool__json_str(g, "id") && fpool__json_int(g, i->id) &&
		  fpool__json_str(g, "pid") &&
		  (i->pid > 0 ? fpool__json_int(g, i->pid)
			      : fpool__json_null(g)) &&
		  fpool__json_str(g, "state") && fpool__json_str(g, i->state);

	if (ok && i->pid > 0)
		ok = fpool__json_str(g, "uptime") && gnum(g, i->uptime);
	else if (ok)
		ok = fpool__json_str(g, "backoff_left") &&
		     gnum(g, i->backoff_left);
	ok = ok && fpool__json_str(g, "restarts") &&
	     fpool__json_int(g, i->restarts) &&
	     fpool__json_str(g, "last_exit") &&
	     (i->last_exit ? fpool__json_str(g, i->last_exit)
			   : fpool__json_null(g));
	if (ok && i->pid > 0)
		ok = fpool__json_str(g, "heartbeat_age") &&
		     gnum(g, i->heartbeat_age) &&
		     fpool__json_str(g, "rss_kib") &&
		     (rss >= 0 ? fpool__json_int(g, rss)
			       : fpool__json_null(g)) &&
		     fpool__json_str(g, "requests") &&
		     fpool__json_int(g, (long long)i->requests) &&
		     fpool__json_str(g, "role") && fpool__json_str(g, i->role);
	return ok && yajl_gen_map_close(g) == yajl_gen_status_ok;
}

static bool gen_status(yajl_gen g, struct fpool_pool *pool)
{
	bool ok;

	ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
	     fpool__json_str(g, "pid") &&
	     fpool__json_int(g, pool->master_pid) &&
	     fpool__json_str(g, "target") &&
	     fpool__json_int(g, fpool_pool_size(pool)) &&
	     fpool__json_str(g, "live") &&
	     fpool__json_int(g, fpool__pool_live(pool)) &&
	     fpool__json_str(g, "uptime") &&
	     gnum(g, fpool__now() - pool->started) &&
	     fpool__json_str(g, "restarts") &&
	     fpool__json_int(g, fpool__pool_restarts(pool)) &&
	     fpool__json_str(g, "reloading") &&
	     yajl_gen_bool(g, pool->reloading) == yajl_gen_status_ok &&
	     fpool__json_str(g, "workers") &&
	     yajl_gen_array_open(g) == yajl_gen_status_ok &&
	     fpool__pool_each(pool, gen_info, g);
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

static bool gen_output(yajl_gen g, const struct fpool__ring *ring, unsigned id,
		       size_t lines)
{
	size_t n = ring->n, from = n > lines ? n - lines : 0;
	bool ok = yajl_gen_map_open(g) == yajl_gen_status_ok &&
		  fpool__json_str(g, "worker") && fpool__json_int(g, id) &&
		  fpool__json_str(g, "lines") &&
		  yajl_gen_array_open(g) == yajl_gen_status_ok;

	for (size_t i = from; ok && i < n; i++) {
		size_t len, clean_len;
		const char *line = fpool__ring_get(ring, i, &len);
		char *clean = fpool__utf8_sanitize(line, len, true, &clean_len);

		ok = clean != NULL &&
		     yajl_gen_string(g, (const unsigned char *)clean,
				     clean_len) == yajl_gen_status_ok;
		free(clean);
	}
	return ok && yajl_gen_array_close(g) == yajl_gen_status_ok &&
	       yajl_gen_map_close(g) == yajl_gen_status_ok;
}

/* ---- requests ----------------------------------------------------------- */

/* A whole number in [min, max] under `key`.  0, or a message. */
static const char *get_uint(yajl_val req, const char *key, long long min,
			    long long max, long long *out)
{
	static char why[96];
	yajl_val v = fpool__json_get(req, key);

	if (v == NULL) {
		snprintf(why, sizeof(why), "missing \"%s\"", key);
		return why;
	}
	if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < min ||
	    YAJL_GET_INTEGER(v) > max) {
		snprintf(why, sizeof(why),
			 "\"%s\" must be a whole number from %lld to %lld", key,
			 min, max);
		return why;
	}
	*out = YAJL_GET_INTEGER(v);
	return NULL;
}

int fpool__signal_parse(const char *name)
{
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (int sig = 1; sig < NSIG; sig++) {
		const char *abbrev = sigabbrev_np(sig);

		if (abbrev != NULL && strcmp(abbrev, name) == 0)
			return sig;
	}
	return -EINVAL;
}

/*
 * Carry out one request.  Writes the "result" value into g and returns
 * NULL, or returns the error message (then g is not used).
 */
static const char *execute(struct fpool_pool *pool, yajl_val req,
			   const char *cmd, yajl_gen g, bool *stop,
			   bool *graceful)
{
	static char why[128];
	long long n, id;
	const char *err;
	const struct fpool__ring *ring;
	pid_t pid;
	int r;

	if (strcmp(cmd, "status") == 0)
		return gen_status(g, pool) ? NULL : "out of memory";
	if (strcmp(cmd, "scale") == 0) {
		unsigned long need;

		if ((err = get_uint(req, "workers", 1, FPOOL_MAX_WORKERS, &n)))
			return err;
		if (!fpool__pool_fds_fit(pool, (unsigned)n, &need)) {
			snprintf(
				why, sizeof(why),
				"%lld workers need up to %lu open files in the "
				"master; its limit is %llu",
				n, need, (unsigned long long)pool->nofile);
			return why;
		}
		r = fpool__pool_scale(pool, (unsigned)n);
		if (r != 0)
			return fpool_strerror(r);
		fpool_log(FPOOL_LOG_INFO, "scaled to %lld workers", n);
		return gen_status(g, pool) ? NULL : "out of memory";
	}
	if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) {
		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		r = cmd[0] == 'a'
			    ? fpool_pool_add_worker(pool, (unsigned)id)
			    : fpool_pool_remove_worker(pool, (unsigned)id);
		if (r == -EEXIST)
			return "that worker is already running";
		if (r == -ENOENT)
			return "no such worker";
		if (r == -EBUSY)
			return "cannot remove the last worker";
		if (r == -EMFILE)
			return "one more worker would not fit the master's "
			       "open file limit";
		if (r != 0)
			return fpool_strerror(r);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "kill") == 0) {
		yajl_val sv = fpool__json_get(req, "signal");
		int sig = SIGTERM;

		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		if (sv != NULL &&
		    (!YAJL_IS_STRING(sv) ||
		     (sig = fpool__signal_parse(sv->u.string)) < 0))
			return "\"signal\" must be a signal name such as "
			       "\"TERM\"";
		r = fpool__pool_kill(pool, (unsigned)id, sig, &pid);
		if (r == -ENOENT)
			return "no such worker running";
		if (r != 0)
			return fpool_strerror(r);
		fpool_log(FPOOL_LOG_INFO,
			  "control: sent %s to worker %lld pid %d",
			  fpool__signame(sig), id, (int)pid);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "reload") == 0) {
		if ((r = fpool_pool_reload(pool)) != 0)
			return r == -ESHUTDOWN ? "the pool is not running "
						 "(stopping, or not started)"
					       : fpool_strerror(r);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "stop") == 0) {
		yajl_val gv = fpool__json_get(req, "graceful");

		if (gv != NULL && !YAJL_IS_TRUE(gv) && !YAJL_IS_FALSE(gv))
			return "\"graceful\" must be true or false";
		*stop = true;
		*graceful = gv == NULL || YAJL_IS_TRUE(gv);
		return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? NULL
								 : "internal";
	}
	if (strcmp(cmd, "output") == 0) {
		n = 50;
		if ((err = get_uint(req, "worker", 0, FPOOL_MAX_WORKERS - 1,
				    &id)))
			return err;
		if (fpool__json_get(req, "lines") != NULL &&
		    (err = get_uint(req, "lines", 1, 100000, &n)))
			return err;
		ring = fpool__pool_output(pool, (unsigned)id);
		if (ring == NULL)
			return "no such worker";
		return gen_output(g, ring, (unsigned)id, (size_t)n)
			       ? NULL
			       : "out of memory";
	}
	snprintf(why, sizeof(why),
		 "unknown command \"%.40s\" (status, scale, add, remove, kill, "
		 "reload, stop, output)",
		 cmd);
	return why;
}

static bool hex_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
		      (*s >= 'A' && *s <= 'F')))
			return false;
	return true;
}

/* Build the reply line to one request line into out.  Sets *stop when
 * the request asks the pool to stop (done once the reply is sent). */
void fpool__control_handle(struct fpool_pool *pool, const char *line,
			   size_t len, struct evbuffer *out, bool *stop,
			   bool *graceful)
{
	char errbuf[128] = "";
	yajl_gen g = yajl_gen_alloc(NULL), result = yajl_gen_alloc(NULL);
	yajl_val req = NULL, idv = NULL, cmdv;
	const char *err = NULL, *id = NULL;
	const unsigned char *buf;
	size_t n;
	char *copy = NULL;

	*stop = false;
	if (g == NULL || result == NULL) {
		err = "out of memory";
		goto reply;
	}
	if (len > FPOOL_CONTROL_MAX) {
		err = "request too large";
		goto reply;
	}
	if (memchr(line, '\0', len) != NULL || !fpool__utf8_valid(line, len)) {
		err = "malformed request: not UTF-8 text";
		goto reply;
	}
	copy = malloc(len + 1);
	if (copy == NULL) {
		err = "out of memory";
		goto reply;
	}
	memcpy(copy, line, len);
	copy[len] = '\0';
	req = yajl_tree_parse(copy, errbuf, sizeof(errbuf));
	if (req == NULL) {
		/* yajl's message spans lines; its first says enough. */
		static char why[sizeof(errbuf) + 32];

		errbuf[strcspn(errbuf, "\n")] = '\0';
		snprintf(why, sizeof(why), "malformed JSON: %s", errbuf);
		err = why;
		goto reply;
	}
	if (!YAJL_IS_OBJECT(req)) {
		err = "a request must be a JSON object";
		goto reply;
	}
	idv = fpool__json_get(req, "id");
	if (idv == NULL || !YAJL_IS_STRING(idv) || !hex_id(idv->u.string)) {
		idv = NULL;
		err = "\"id\" must be a string of hex digits";
		goto reply;
	}
	id = idv->u.string;
	cmdv = fpool__json_get(req, "cmd");
	if (cmdv == NULL || !YAJL_IS_STRING(cmdv)) {
		err = "\"cmd\" must be a string";
		goto reply;
	}
	err = execute(pool, req, cmdv->u.string, result, stop, graceful);
reply:
	if (g == NULL || result == NULL) {
		evbuffer_add_printf(out, "{\"id\":null,\"ok\":false,"
					 "\"error\":\"out of memory\"}\n");
		goto out;
	}
	yajl_gen_map_open(g);
	fpool__json_str(g, "id");
	if (id != NULL)
		fpool__json_str(g, id);
	else
		yajl_gen_null(g);
	fpool__json_str(g, "ok");
	yajl_gen_bool(g, err == NULL);
	if (err != NULL) {
		fpool__json_str(g, "error");
		fpool__json_str(g, err);
	} else {
		fpool__json_str(g, "result");
		yajl_gen_get_buf(result, &buf, &n);
		/* The result is already JSON: splice it in as a number would
		 * be, yajl_gen_number writes its text verbatim. */
		yajl_gen_number(g, (const char *)buf, n);
	}
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &buf, &n);
	evbuffer_add(out, buf, n);
	evbuffer_add(out, "\n", 1);
out:
	if (g != NULL)
		yajl_gen_free(g);
	if (result != NULL)
		yajl_gen_free(result);
	if (req != NULL)
		yajl_tree_free(req);
	free(copy);
}

/* ---- clients ------------------------------------------------------------ */

static void client_free(struct fpool__client *c)
{
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
	 * that only it drains it; this one write is ours. */
	evbuffer_unfreeze(out, 1);
	while (evbuffer_get_length(out) > 0 && evbuffer_write(out, fd) > 0)
		;
	evbuffer_freeze(out, 1);
}

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

	if (c->state == CLIENT_DISCARD) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return true;
	}
	while (c->state != CLIENT_HANG_UP &&
	       evbuffer_get_length(out) < CONTROL_OUT_HIGH &&
	       (line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
		fpool__control_handle(c->ctl->pool, line, len, out, &stop,
				      &graceful);
		free(line);
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

static void accept_cb(struct fpool_acceptor *a, int fd,
		      const struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct fpool__control *ctl = arg;
	struct fpool__client *c;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct timeval idle = { CONTROL_IDLE, 0 }, stall = { CONTROL_STALL, 0 };

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
	c = calloc(1, sizeof(*c));
	if (c == NULL ||
	    (c->bev = bufferevent_socket_new(ctl->pool->base, fd,
					     BEV_OPT_CLOSE_ON_FREE)) == NULL) {
		fpool_log(FPOOL_LOG_ERROR, "control: out of memory");
		free(c);
		close(fd);
		return;
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
