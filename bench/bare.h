/*
 * What the bare baselines of scripts/bench share (bare-evhttp.c,
 * bare-http.c): one listen() on HOST:PORT, N children forked after it that
 * each run child(fd, id), and a parent that waits for SIGTERM or SIGINT,
 * then SIGKILLs them.  A child that dies is not replaced.
 *
 *   NAME [-w N] [-b HOST:PORT]        (default: 2, 127.0.0.1:8080)
 */
#ifndef FPOOL_BENCH_BARE_H
#define FPOOL_BENCH_BARE_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define BARE_MAX_WORKERS 1024

static volatile sig_atomic_t bare_stop;

static void bare_on_signal(int sig)
{
	bare_stop = sig;
}

static int bare_listen(const char *name, const char *addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(addr, ':');
	int one = 1, fd;

	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
		fprintf(stderr, "%s: bad address %s\n", name, addr);
		return -1;
	}
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "%s: bad address %s\n", name, addr);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		fprintf(stderr, "%s: %s: %s\n", name, addr, strerror(errno));
		return -1;
	}
	return fd;
}

static int bare_main(int argc, char **argv, const char *name,
		     int (*child)(int fd, unsigned id))
{
	const char *addr = "127.0.0.1:8080";
	unsigned n = 2;
	pid_t pids[BARE_MAX_WORKERS];
	struct sigaction sa = { .sa_handler = bare_on_signal };
	int opt, fd;

	while ((opt = getopt(argc, argv, "w:b:")) != -1) {
		if (opt == 'w') {
			n = (unsigned)atoi(optarg);
		} else if (opt == 'b') {
			addr = optarg;
		} else {
			fprintf(stderr, "usage: %s [-w N] [-b HOST:PORT]\n",
				name);
			return 2;
		}
	}
	if (n < 1 || n > BARE_MAX_WORKERS) {
		fprintf(stderr, "%s: -w takes 1..%d\n", name, BARE_MAX_WORKERS);
		return 2;
	}
	if (sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0) {
		fprintf(stderr, "%s: sigaction: %s\n", name, strerror(errno));
		return 1;
	}
	fd = bare_listen(name, addr);
	if (fd < 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			fprintf(stderr, "%s: fork: %s\n", name,
				strerror(errno));
			n = i;
			bare_stop = SIGTERM;
			break;
		}
		if (pids[i] == 0)
			_exit(child(fd, i));
	}
	while (!bare_stop) {
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

#endif /* FPOOL_BENCH_BARE_H */
