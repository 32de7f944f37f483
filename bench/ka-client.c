/*
 * ka-client: K HTTP/1.1 keep-alive connections, each sending GET /
 * back to back (one request in flight per connection), that tells apart
 * the ways a request can fail, which wrk's error counts mix:
 *
 *   dropped   a request written on an established connection that got no
 *             (complete) response: the server closed or reset the
 *             connection under it.  "dropped_first" counts those that were
 *             the connection's first request (a connection reset from a
 *             listen backlog); the rest were on a reused keep-alive
 *             connection.
 *   refused   a connect() that failed (ECONNREFUSED and the like).
 *   errors    a response with a status other than 200.
 *   timeouts  no response within 10 s (the connection is then closed).
 *
 * A response saying "Connection: close" is not a failure: the connection
 * is closed and a new one is opened.  After a refused connect the
 * connection retries after 1 ms, or gives up with -s (for a shutdown).
 *
 *   ka-client -p PORT [-a 127.0.0.1] [-c K] [-d SECONDS] [-b BUCKET_MS]
 *             [-C] [-s]
 *     -C  send "Connection: close" (one request per connection)
 *     -s  stop a connection after a refused connect; the client ends when
 *         all connections have stopped (or after -d)
 *
 * It prints one JSON object: the counts, req/s, latency percentiles, the
 * start time (Unix, for lining up the buckets with a signal sent to the
 * server), responses per bucket, and responses per X-Pid.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "load.h"

#define MAX_CONNS	 4096
#define INBUF		 16384
#define RESPONSE_TIMEOUT 10.0  /* s */
#define RETRY_DELAY	 0.001 /* s */
#define MAX_PIDS	 4096

enum state { IDLE, CONNECTING, SENT, WAITING, STOPPED };

struct conn {
	int fd;
	enum state state;
	unsigned responses; /* on this connection */
	double sent_at, retry_at;
	size_t inlen;
	char in[INBUF];
};

static struct conn *conns;
static int nconns = 64, epfd;
static struct sockaddr_in addr = { .sin_family = AF_INET };
static bool close_mode, stop_on_refuse;
static const char *request;
static size_t request_len;

static unsigned long long ok, dropped, dropped_first, refused, errors, timeouts,
	connects;
static uint32_t *lat;
static unsigned long long *buckets;
static size_t nbuckets;
static double bucket_s = 0.1, start;
static struct {
	long pid;
	unsigned long long n;
} pids[MAX_PIDS];
static int npids;

static void count_pid(long pid)
{
	for (int i = 0; i < npids; i++) {
		if (pids[i].pid == pid) {
			pids[i].n++;
			return;
		}
	}
	if (npids < MAX_PIDS) {
		pids[npids].pid = pid;
		pids[npids++].n = 1;
	}
}

static void conn_close(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->inlen = 0;
	c->state = IDLE;
}

static void conn_send(struct conn *c)
{
	ssize_t n = send(c->fd, request, request_len, MSG_NOSIGNAL);

	if (n != (ssize_t)request_len) {
		/* The server closed the connection before our request went
		 * out: that request is lost all the same. */
		dropped++;
		if (c->responses == 0)
			dropped_first++;
		conn_close(c);
		return;
	}
	c->sent_at = now();
	c->state = SENT;
}

static void conn_open(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP };
	int one = 1, r;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		perror("ka-client: socket");
		exit(1);
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->responses = 0;
	c->inlen = 0;
	connects++;
	r = connect(c->fd, (struct sockaddr *)&addr, sizeof(addr));
	if (r < 0 && errno != EINPROGRESS) {
		refused++;
		conn_close(c);
		c->state = stop_on_refuse ? STOPPED : WAITING;
		c->retry_at = now() + RETRY_DELAY;
		return;
	}
	ev.data.ptr = c;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		perror("ka-client: epoll_ctl");
		exit(1);
	}
	c->state = CONNECTING;
}

/* The connection failed or ended under a request, or while idle. */
static void conn_lost(struct conn *c)
{
	if (c->state == CONNECTING) {
		refused++;
		conn_close(c);
		c->state = stop_on_refuse ? STOPPED : WAITING;
		c->retry_at = now() + RETRY_DELAY;
		return;
	}
	if (c->state == SENT) {
		dropped++;
		if (c->responses == 0)
			dropped_first++;
	}
	conn_close(c);
}

/* Parse one complete response at the start of c->in; returns its length,
 * 0 if more bytes are needed, -1 if it cannot be parsed. */
static long parse(struct conn *c, int *status, bool *closing, long *pid)
{
	char *end, *p, *line;
	long clen = 0, hlen;

	c->in[c->inlen] = '\0';
	end = strstr(c->in, "\r\n\r\n");
	if (end == NULL)
		return c->inlen >= INBUF - 1 ? -1 : 0;
	hlen = end - c->in + 4;
	if (strncmp(c->in, "HTTP/1.", 7) != 0)
		return -1;
	*status = atoi(c->in + 9);
	*closing = strncmp(c->in, "HTTP/1.0", 8) == 0;
	*pid = 0;
	for (line = strstr(c->in, "\r\n") + 2; line < end;
	     line = strstr(line, "\r\n") + 2) {
		p = strchr(line, ':');
		if (p == NULL || p > end)
			break;
		p++;
		while (*p == ' ')
			p++;
		if (strncasecmp(line, "content-length:", 15) == 0)
			clen = atol(p);
		else if (strncasecmp(line, "x-pid:", 6) == 0)
			*pid = atol(p);
		else if (strncasecmp(line, "connection:", 11) == 0)
			*closing = strncasecmp(p, "close", 5) == 0;
	}
	if (hlen + clen > INBUF - 1)
		return -1;
	if ((long)c->inlen < hlen + clen)
		return 0;
	return hlen + clen;
}

static void conn_readable(struct conn *c)
{
	for (;;) {
		ssize_t n =
			recv(c->fd, c->in + c->inlen, INBUF - 1 - c->inlen, 0);
		int status;
		bool closing;
		long len, pid;
		double t;

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			conn_lost(c);
			return;
		}
		if (n < 0)
			return;
		c->inlen += (size_t)n;
		len = parse(c, &status, &closing, &pid);
		if (len < 0) {
			fprintf(stderr, "ka-client: unparsable response\n");
			errors++;
			conn_close(c);
			return;
		}
		if (len == 0)
			continue;
		if (c->state != SENT) {
			fprintf(stderr, "ka-client: unasked-for response\n");
			errors++;
			conn_close(c);
			return;
		}
		t = now();
		if (status == 200) {
			size_t us = (size_t)((t - c->sent_at) * 1e6);
			size_t b = (size_t)((t - start) / bucket_s);

			ok++;
			lat[us < LAT_BINS ? us : LAT_BINS - 1]++;
			if (b < nbuckets)
				buckets[b]++;
			count_pid(pid);
		} else {
			errors++;
		}
		c->responses++;
		memmove(c->in, c->in + len, c->inlen - (size_t)len);
		c->inlen -= (size_t)len;
		c->state = IDLE;
		if (closing || close_mode) {
			conn_close(c);
			return;
		}
		conn_send(c);
		return;
	}
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	double seconds = 5, end, t;
	struct timespec wall;
	struct epoll_event evs[256];
	int opt, port = 0;
	char req[256];
	bool active;

	while ((opt = getopt(argc, argv, "p:a:c:d:b:Cs")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'a':
			host = optarg;
			break;
		case 'c':
			nconns = atoi(optarg);
			break;
		case 'd':
			seconds = atof(optarg);
			break;
		case 'b':
			bucket_s = atof(optarg) / 1000.0;
			break;
		case 'C':
			close_mode = true;
			break;
		case 's':
			stop_on_refuse = true;
			break;
		default:
			fprintf(stderr, "usage: ka-client -p PORT [-a ADDR] "
					"[-c K] [-d S] [-b MS] [-C] [-s]\n");
			return 2;
		}
	}
	if (port <= 0 || nconns < 1 || nconns > MAX_CONNS || seconds <= 0 ||
	    bucket_s <= 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "ka-client: bad arguments\n");
		return 2;
	}
	addr.sin_port = htons((unsigned short)port);
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n",
		 host, port, close_mode ? "Connection: close\r\n" : "");
	request = req;
	request_len = strlen(req);
	conns = calloc((size_t)nconns, sizeof(*conns));
	lat = calloc(LAT_BINS, sizeof(*lat));
	nbuckets = (size_t)(seconds / bucket_s) + 2;
	buckets = calloc(nbuckets, sizeof(*buckets));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (conns == NULL || lat == NULL || buckets == NULL || epfd < 0) {
		perror("ka-client");
		return 1;
	}
	clock_gettime(CLOCK_REALTIME, &wall);
	start = now();
	end = start + seconds;
	for (int i = 0; i < nconns; i++) {
		conns[i].fd = -1;
		conns[i].state = IDLE;
	}
	for (;;) {
		int timeout = 100, n;

		t = now();
		if (t >= end)
			break;
		active = false;
		for (int i = 0; i < nconns; i++) {
			struct conn *c = &conns[i];

			if (c->state == WAITING && t >= c->retry_at)
				c->state = IDLE;
			if (c->state == IDLE)
				conn_open(c);
			if (c->state == WAITING)
				timeout = 1;
			if (c->state == SENT &&
			    t - c->sent_at > RESPONSE_TIMEOUT) {
				timeouts++;
				conn_close(c);
				conn_open(c);
			}
			if (c->state != STOPPED)
				active = true;
		}
		if (!active)
			break;
		n = epoll_wait(epfd, evs, 256, timeout);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			int err = 0;
			socklen_t elen = sizeof(err);

			if (c->fd < 0)
				continue;
			if (c->state == CONNECTING) {
				if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR,
					       &err, &elen) < 0 ||
				    err != 0 ||
				    (evs[i].events & (EPOLLERR | EPOLLHUP))) {
					conn_lost(c);
					continue;
				}
				if (!(evs[i].events & EPOLLOUT))
					continue;
				{
					struct epoll_event ev = {
						.events = EPOLLIN | EPOLLRDHUP,
						.data.ptr = c
					};
					epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd,
						  &ev);
				}
				c->state = IDLE;
				conn_send(c);
				continue;
			}
			if (evs[i].events &
			    (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
				conn_readable(c);
		}
	}
	t = now() - start;
	printf("{\"ok\": %llu, \"dropped\": %llu, \"dropped_first\": %llu, "
	       "\"refused\": %llu, \"errors\": %llu, \"timeouts\": %llu, "
	       "\"connects\": %llu, \"seconds\": %.3f, \"rps\": %.1f, "
	       "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"start\": %.6f, "
	       "\"bucket_ms\": %.1f, \"buckets\": [",
	       ok, dropped, dropped_first, refused, errors, timeouts, connects,
	       t, (double)ok / t, lat_percentile(lat, ok, 50),
	       lat_percentile(lat, ok, 99),
	       (double)wall.tv_sec + (double)wall.tv_nsec / 1e9,
	       bucket_s * 1000.0);
	for (size_t i = 0; i < nbuckets && (double)i * bucket_s < t; i++)
		printf("%s%llu", i ? ", " : "", buckets[i]);
	printf("], \"pids\": {");
	for (int i = 0; i < npids; i++)
		printf("%s\"%ld\": %llu", i ? ", " : "", pids[i].pid,
		       pids[i].n);
	printf("}}\n");
	return 0;
}
