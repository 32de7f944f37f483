/*
 * libFuzzer target: the http worker's request path (workers/http.c,
 * compiled in here), i.e. what it does around llhttp with a client's
 * bytes: the header and body limits, the pause at each request and the
 * resume where it stopped (the chunk extension fix re-feeds a byte), the
 * input kept while a /sleep waits or answers pile up, the query parsing.
 *
 * The input: byte 0 picks the mode (bit 7: the worker is stopping; the
 * rest seeds the sizes of the reads), the remaining bytes are what the
 * client sends.  They go through a socketpair in reads of those sizes to
 * the worker's own read callback; a /sleep is completed at once, answers
 * are drained and must each begin with a status line.  At the end the
 * client shuts its side down, and the connection is freed if the worker
 * did not close it.
 *
 * The worker's calls into libforkpool are stubs here: the target needs
 * no pool, no worker process and no master.
 */
#include <stdarg.h>
#include <sys/un.h>

#include "../../workers/http.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- Stubs of the public API the worker uses ----------------------- */

void fpool_log(enum fpool_log_level level, const char *fmt, ...)
{
	(void)level;
	(void)fmt;
}

void fpool_worker_count_requests(struct fpool_worker *w, uint64_t n)
{
	(void)w;
	(void)n;
}

void fpool_worker_set_activity(struct fpool_worker *w, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	(void)w;
	if (fmt == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap); /* the arguments are read */
	va_end(ap);
}

unsigned fpool_worker_id(const struct fpool_worker *w)
{
	(void)w;
	return 0;
}

pid_t fpool_worker_pid(const struct fpool_worker *w)
{
	(void)w;
	return 1;
}

struct event_base *fpool_worker_base(struct fpool_worker *w)
{
	(void)w;
	return NULL;
}

const int *fpool_worker_listeners(const struct fpool_worker *w, size_t *n)
{
	(void)w;
	*n = 0;
	return NULL;
}

void fpool_worker_set_data(struct fpool_worker *w, void *d)
{
	(void)w;
	(void)d;
}

void *fpool_worker_data(const struct fpool_worker *w)
{
	(void)w;
	return NULL;
}

int fpool_worker_loop(struct fpool_worker *w)
{
	(void)w;
	return 0;
}

int fpool_acceptor_new(struct fpool_acceptor **out, struct event_base *base,
		       int fd, unsigned flags, fpool_accept_cb cb, void *arg)
{
	(void)base;
	(void)fd;
	(void)flags;
	(void)cb;
	(void)arg;
	*out = NULL;
	return -ENOSYS;
}

void fpool_acceptor_free(struct fpool_acceptor *a)
{
	(void)a;
}

int fpool_duration_parse(const char *s, double *seconds)
{
	(void)s;
	*seconds = 1;
	return 0;
}

const char *fpool_strerror(int err)
{
	return strerror(-err);
}

/* ---- The harness ------------------------------------------------------ */

static struct http fz;

static void fz_init(void)
{
	static bool done;

	if (done)
		return;
	done = true;
	fz.base = event_base_new();
	fz.rbuf = malloc(HTTP_READ_SIZE);
	if (fz.base == NULL || fz.rbuf == NULL)
		abort();
	fz.header_timeout = HTTP_HEADER_TIMEOUT;
	fz.idle_timeout = HTTP_IDLE_TIMEOUT;
	fz.event_size = (event_get_struct_event_size() + 15) & ~(size_t)15;
	fz.ident_len = (size_t)snprintf(fz.ident, sizeof(fz.ident),
					"X-Pid: 1\r\nX-Worker: 0\r\n");
	fz.hello_len = (size_t)snprintf(fz.hello, sizeof(fz.hello),
					"hello from worker 0 pid 1\n");
	parser_setup();
}

/* Read what the worker sent; every answer it begins must start with a
 * status line (an answer is never split by another). */
static void fz_drain(int fd, size_t *at_start)
{
	char buf[65536];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
		if (*at_start && n >= 5 && memcmp(buf, "HTTP/", 5) != 0)
			abort();
		*at_start = 0;
	}
}

/* The connection the harness created, or NULL once the worker closed it. */
static struct conn *fz_conn(void)
{
	return fz.conns;
}

/* Let the worker go on: a /sleep ends now, blocked answers are sent. */
static void fz_settle(int client, size_t *at_start)
{
	for (int i = 0; i < 64; i++) {
		struct conn *c = fz_conn();

		fz_drain(client, at_start);
		if (c == NULL)
			return;
		if (c->phase == PH_BUSY) {
			event_del(c->sleep_ev);
			sleep_done_cb(-1, EV_TIMEOUT, c);
		} else if (c->writing) {
			conn_write_cb(c->fd, EV_WRITE, c);
		} else {
			return;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t at_start = 1, off = 1;
	unsigned seed;
	int sv[2];

	if (size < 1)
		return 0;
	fz_init();
	fz.stopping = (data[0] & 0x80) != 0;
	fz.stop_at = mono_now();
	seed = data[0] & 0x7f;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
		       sv) != 0)
		abort();
	accept_cb(NULL, sv[0], (struct sockaddr *)&sa, sizeof(sa), &fz);
	while (off < size && fz_conn() != NULL) {
		/* Reads of 1 to 128 bytes, or whatever is left. */
		size_t n = seed == 0 ? size - off : 1 + (off * 31 + seed) % 128;
		struct conn *c = fz_conn();

		if (n > size - off)
			n = size - off;
		if (send(sv[1], data + off, n, MSG_NOSIGNAL) != (ssize_t)n)
			break; /* the worker closed, or the pipe is full */
		off += n;
		if (c->reading || c->phase == PH_LINGER)
			conn_read_cb(c->fd, EV_READ, c);
		fz_settle(sv[1], &at_start);
	}
	/* The client is done: EOF. */
	shutdown(sv[1], SHUT_WR);
	for (int i = 0; i < 4 && fz_conn() != NULL; i++) {
		struct conn *c = fz_conn();

		if (c->reading || c->phase == PH_LINGER)
			conn_read_cb(c->fd, EV_READ, c);
		fz_settle(sv[1], &at_start);
	}
	if (fz_conn() != NULL)
		conn_free(fz_conn());
	close(sv[1]);
	return 0;
}
