/*
 * echo-load: a ping-pong load client for an echo server.  N connections,
 * each writing an M-byte message and reading the M bytes back before it
 * writes the next, spread over T threads (one epoll loop each), for D
 * seconds.
 *
 *   echo-load -p PORT [-a 127.0.0.1] [-c N] [-m M] [-t T] [-d SECONDS]
 *
 * It prints one JSON object: messages/s, round-trip percentiles, and the
 * count of connections that failed (0 unless the server misbehaved).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "load.h"

#define MAX_THREADS 64

struct conn {
	int fd;
	size_t sent, got; /* bytes of the current message */
	double t0;
};

struct thread {
	pthread_t tid;
	int nconns;
	struct conn *conns;
	unsigned long long msgs, failed;
	uint32_t *lat;
};

static struct sockaddr_in addr = { .sin_family = AF_INET };
static size_t msg_len = 64;
static char *msg;
static double seconds = 5;

/* Write what remains of the message; -1 if the connection failed. */
static int pump_out(struct conn *c)
{
	while (c->sent < msg_len) {
		ssize_t n = send(c->fd, msg + c->sent, msg_len - c->sent,
				 MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->sent += (size_t)n;
	}
	return 0;
}

static void conn_fail(struct thread *th, int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	th->failed++;
}

static void *run(void *arg)
{
	struct thread *th = arg;
	struct epoll_event evs[256];
	static __thread char buf[65536];
	int ep = epoll_create1(EPOLL_CLOEXEC);
	double end;

	if (ep < 0) {
		perror("echo-load: epoll_create1");
		exit(1);
	}
	for (int i = 0; i < th->nconns; i++) {
		struct conn *c = &th->conns[i];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		int one = 1;

		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr,
					 sizeof(addr)) < 0) {
			perror("echo-load: connect");
			exit(1);
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	end = now() + seconds;
	for (int i = 0; i < th->nconns; i++) {
		struct conn *c = &th->conns[i];

		c->t0 = now();
		if (pump_out(c) < 0)
			conn_fail(th, ep, c);
	}
	while (now() < end) {
		int n = epoll_wait(ep, evs, 256, 100);

		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			ssize_t r;

			if (c->fd < 0)
				continue;
			r = recv(c->fd, buf, sizeof(buf), 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0 || c->got + (size_t)r > c->sent) {
				conn_fail(th, ep, c);
				continue;
			}
			c->got += (size_t)r;
			if (c->got == msg_len) {
				double t = now();
				size_t us = (size_t)((t - c->t0) * 1e6);

				th->lat[us < LAT_BINS ? us : LAT_BINS - 1]++;
				th->msgs++;
				c->got = c->sent = 0;
				c->t0 = t;
			}
			if (pump_out(c) < 0)
				conn_fail(th, ep, c);
		}
	}
	for (int i = 0; i < th->nconns; i++)
		if (th->conns[i].fd >= 0)
			close(th->conns[i].fd);
	close(ep);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int opt, port = 0, nconns = 64, nthreads = 1;
	struct thread th[MAX_THREADS];
	unsigned long long msgs = 0, failed = 0;
	uint32_t *lat;
	double t0, t;

	while ((opt = getopt(argc, argv, "p:a:c:m:t:d:")) != -1) {
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
		case 'm':
			msg_len = (size_t)atol(optarg);
			break;
		case 't':
			nthreads = atoi(optarg);
			break;
		case 'd':
			seconds = atof(optarg);
			break;
		default:
			fprintf(stderr, "usage: echo-load -p PORT [-a ADDR] "
					"[-c N] [-m M] [-t T] [-d S]\n");
			return 2;
		}
	}
	if (port <= 0 || nconns < 1 || msg_len < 1 || msg_len > 65536 ||
	    nthreads < 1 || nthreads > MAX_THREADS || nthreads > nconns ||
	    seconds <= 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "echo-load: bad arguments\n");
		return 2;
	}
	addr.sin_port = htons((unsigned short)port);
	msg = malloc(msg_len);
	lat = calloc(LAT_BINS, sizeof(*lat));
	if (msg == NULL || lat == NULL) {
		perror("echo-load");
		return 1;
	}
	memset(msg, 'x', msg_len);
	t0 = now();
	for (int i = 0; i < nthreads; i++) {
		th[i].nconns = nconns / nthreads + (i < nconns % nthreads);
		th[i].conns = calloc((size_t)th[i].nconns, sizeof(struct conn));
		th[i].lat = calloc(LAT_BINS, sizeof(uint32_t));
		th[i].msgs = th[i].failed = 0;
		if (th[i].conns == NULL || th[i].lat == NULL ||
		    pthread_create(&th[i].tid, NULL, run, &th[i]) != 0) {
			perror("echo-load");
			return 1;
		}
	}
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i].tid, NULL);
		msgs += th[i].msgs;
		failed += th[i].failed;
		for (size_t j = 0; j < LAT_BINS; j++)
			lat[j] += th[i].lat[j];
	}
	t = now() - t0;
	printf("{\"msgs\": %llu, \"failed\": %llu, \"seconds\": %.3f, "
	       "\"msgs_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
	       "\"conns\": %d, \"bytes\": %zu}\n",
	       msgs, failed, t, (double)msgs / t, lat_percentile(lat, msgs, 50),
	       lat_percentile(lat, msgs, 99), nconns, msg_len);
	return failed > 0 ? 1 : 0;
}
