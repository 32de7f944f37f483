/*
 * messages: how many small messages per second go master -> worker and
 * worker -> master (fpool_pool_send, fpool_worker_send), one worker.
 *
 *   messages [N [SIZE]]        (default 100000 messages of 64 bytes)
 *
 * Phase 1: the master sends N messages to worker 0, at most WINDOW not yet
 * acknowledged; the worker acknowledges every ACK_EVERY ("a" + count).
 * Phase 2: the master says "g" and the worker sends N messages the same
 * way, acknowledged by the master.  A send that finds the channel full
 * (-EAGAIN) waits for the next acknowledgement.  Prints one JSON line:
 * {"n": N, "size": SIZE, "m2w_per_s": R, "w2m_per_s": R}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forkpool.h"

#define WINDOW	  128
#define ACK_EVERY 32

static unsigned long n_msgs = 100000;
static size_t size = 64;
static char payload[FPOOL_MESSAGE_MAX];

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the worker ---- */

static unsigned long w_got, w_sent, w_acked;
static int w_sending;

static void ack(struct fpool_worker *w, char tag, unsigned long count)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%c%lu", tag, count);

	fpool_worker_send(w, buf, (size_t)n);
}

static void w_pump(struct fpool_worker *w)
{
	while (w_sending && w_sent < n_msgs && w_sent - w_acked < WINDOW) {
		payload[0] = 'w';
		if (fpool_worker_send(w, payload, size) != 0)
			return; /* full: the next ack resumes */
		w_sent++;
	}
}

static void w_message(struct fpool_worker *w, const void *data, size_t len,
		      void *arg)
{
	const char *d = data;

	(void)arg;
	if (len == 0)
		return;
	if (d[0] == 'm') {
		if (++w_got % ACK_EVERY == 0 || w_got == n_msgs)
			ack(w, 'a', w_got);
	} else if (d[0] == 'g') {
		w_sending = 1;
		w_pump(w);
	} else if (d[0] == 'k') {
		w_acked = strtoul(d + 1, NULL, 10);
		w_pump(w);
	}
}

static int w_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_on_message(w, w_message, NULL);
}

static int w_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w) == 0 ? 0 : 1;
}

/* ---- the master ---- */

static unsigned long m_sent, m_acked, m_got;
static double t0, t1, t2, t3;

static void m_pump(struct fpool_pool *pool)
{
	while (m_sent < n_msgs && m_sent - m_acked < WINDOW) {
		payload[0] = 'm';
		if (fpool_pool_send(pool, 0, payload, size) != 1)
			return;
		m_sent++;
	}
}

static void m_worker(struct fpool_pool *pool,
		     const struct fpool_worker_event *ev, void *arg)
{
	(void)arg;
	if (ev->type == FPOOL_WORKER_READY && t0 == 0) {
		t0 = now();
		m_pump(pool);
	}
}

static void m_message(struct fpool_pool *pool, unsigned id, const void *data,
		      size_t len, void *arg)
{
	const char *d = data;

	(void)id;
	(void)arg;
	if (len == 0)
		return;
	if (d[0] == 'a') {
		m_acked = strtoul(d + 1, NULL, 10);
		if (m_acked == n_msgs) {
			t1 = now();
			t2 = now();
			fpool_pool_send(pool, 0, "g", 1);
		} else {
			m_pump(pool);
		}
	} else if (d[0] == 'w') {
		if (++m_got % ACK_EVERY == 0 || m_got == n_msgs) {
			char buf[32];
			int n = snprintf(buf, sizeof(buf), "k%lu", m_got);

			fpool_pool_send(pool, 0, buf, (size_t)n);
		}
		if (m_got == n_msgs) {
			t3 = now();
			fpool_pool_stop(pool, 1);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct fpool_worker_def def = {
		.name = "messages",
		.on_start = w_start,
		.main = w_main,
	};
	struct fpool_config cfg;
	struct fpool_pool *pool;
	int r;

	if (argc > 1)
		n_msgs = strtoul(argv[1], NULL, 10);
	if (argc > 2)
		size = strtoul(argv[2], NULL, 10);
	if (n_msgs == 0 || size == 0 || size > FPOOL_MESSAGE_MAX) {
		fprintf(stderr, "usage: messages [N [SIZE (1..%d)]]\n",
			FPOOL_MESSAGE_MAX);
		return 2;
	}
	memset(payload, 'x', sizeof(payload));
	fpool_log_set_level(FPOOL_LOG_WARNING);
	fpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.worker = &def;
	if ((r = fpool_pool_new(&pool, &cfg)) != 0) {
		fprintf(stderr, "messages: %s\n", fpool_strerror(r));
		return 1;
	}
	fpool_pool_on_worker(pool, m_worker, NULL);
	fpool_pool_on_message(pool, m_message, NULL);
	r = fpool_pool_run(pool);
	fpool_pool_free(pool);
	if (r != 0 || t3 == 0) {
		fprintf(stderr, "messages: did not finish (%s)\n",
			r ? fpool_strerror(r) : "stopped early");
		return 1;
	}
	printf("{\"n\": %lu, \"size\": %zu, \"m2w_per_s\": %.0f, "
	       "\"w2m_per_s\": %.0f}\n",
	       n_msgs, size, (double)n_msgs / (t1 - t0),
	       (double)n_msgs / (t3 - t2));
	return 0;
}
