/*
 * What the built-in workers (echo, http, jsonrpc) share: their worker
 * arguments, their acceptors, the pauses of their connections around a
 * stop, and a few conversions.  Built on the public API only, as the
 * workers themselves are.
 */
#ifndef FPOOL_WORKERS_COMMON_H
#define FPOOL_WORKERS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "forkpool.h"

/* Seconds a connection waiting for a request stays open after SIGTERM
 * (http, jsonrpc). */
#define WK_STOP_GRACE 1
/* After an answer that refused a request (http) or a line (jsonrpc), our
 * side is shut down and the client's input read and dropped for up to
 * this many seconds, so that closing with unread input (a reset) cannot
 * destroy the answer before the client read it. */
#define WK_LINGER 2

/* The workers' own symbols shared between files stay inside the program:
 * it exports the public API (for the worker modules it loads), not
 * these. */
#pragma GCC visibility push(hidden)

/* "--name VALUE" or "--name=VALUE" at argv[*i]: the value (NULL if this is
 * not --name), advancing *i past it; *missing if the value is absent. */
const char *wk_flag_value(int argc, char **argv, int *i, const char *name,
			  bool *missing);

/* Worker arguments that are only "--idle-timeout SEC" (or
 * "--idle-timeout=SEC"), any number of times, the last one counting: into
 * *tv.  0, or -EINVAL after one error line that starts with `who`. */
int wk_idle_timeout_args(const char *who, int argc, char **argv,
			 struct timeval *tv);

/* Accept on every listener the worker inherited, from its loop, calling
 * `cb` with `arg` for each connection: acceptors[] has room for one per
 * listener, and it and *n are filled as they are made.  0, or the error of
 * the first that fails, logged as "WHO: cannot accept on fd N: ..." (those
 * made before it stay in acceptors[0..*n)). */
int wk_accept_all(struct fpool_worker *w, const char *who,
		  struct fpool_acceptor **acceptors, size_t *n,
		  fpool_accept_cb cb, void *arg);

/* Stop accepting: free acceptors[0..*n) and set *n to 0.  The listeners
 * were given with FPOOL_ACCEPT_CLOSE, which closes this worker's copies
 * only: the master and the other workers keep theirs. */
void wk_accept_stop(struct fpool_acceptor **acceptors, size_t *n);

/* Turn off Nagle's algorithm on a TCP connection (a unix one has none):
 * 0, or -1 with errno set. */
int wk_nodelay(int fd, const struct sockaddr *sa);

/* Seconds as a timeval, and back. */
struct timeval wk_timeval(double sec);
double wk_seconds(const struct timeval *tv);

#pragma GCC visibility pop

#endif /* FPOOL_WORKERS_COMMON_H */
