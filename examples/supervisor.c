/*
 * supervisor: the hooks around a pool's life, a pidfile, output files and
 * the worker timeout.  Master hooks run in the master: on_start before the
 * first worker is forked (here it writes the pidfile), on_shutdown after
 * the last one exited (it removes the pidfile).  Worker hooks run in each
 * worker: on_start before main, on_shutdown after it.  What the workers
 * print goes to two files, one per stream, each line tagged "[worker ID
 * pid PID]".  A worker that sends no heartbeat for 5 s is replaced.
 *
 *     build/examples/supervisor [PIDFILE [STDOUT-FILE [STDERR-FILE]]]
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "forkpool.h"

/* Master hooks get the pool and the `arg` given when they were connected
 * (here the pidfile's path).  A plain pidfile: forkpool's own locks it. */
static int write_pidfile(struct fpool_pool *pool, void *arg)
{
	FILE *f = fopen(arg, "w");

	(void)pool;
	if (f == NULL || fprintf(f, "%d\n", (int)getpid()) < 0 ||
	    fclose(f) != 0) {
		perror(arg);
		return -1; /* the pool does not start */
	}
	printf("master pid %d: on_start: wrote %s\n", (int)getpid(),
	       (char *)arg);
	return 0;
}

static int remove_pidfile(struct fpool_pool *pool, void *arg)
{
	(void)pool;
	if (unlink(arg) < 0)
		perror(arg);
	printf("master pid %d: on_shutdown: removed %s\n", (int)getpid(),
	       (char *)arg);
	return 0;
}

/* Worker hooks run in the worker process: the place to open and close
 * what main needs.  Their output is captured like main's. */
static int on_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	printf("on_start: worker %u is starting\n", fpool_worker_id(w));
	return 0; /* non-zero: a failed start, the master tries again */
}

static int on_shutdown(struct fpool_worker *w, void *arg)
{
	(void)arg;
	fprintf(stderr, "on_shutdown: worker %u is done\n", fpool_worker_id(w));
	return 0;
}

/* A blocking main: a line on stdout each second, and frequent checks
 * whether to go on (each check also sends the heartbeat when due). */
static int worker_main(struct fpool_worker *w, void *arg)
{
	const struct timespec step = { .tv_nsec = 100000000 }; /* 0.1 s */
	time_t now, last = 0;

	(void)arg;
	while (fpool_worker_is_running(w)) {
		if ((now = time(NULL)) != last)
			printf("worker %u: time %ld\n", fpool_worker_id(w),
			       (long)(last = now));
		nanosleep(&step, NULL);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct fpool_worker_def def = {
		.name = "supervisor",
		.on_start = on_start,
		.on_shutdown = on_shutdown,
		.main = worker_main,
	};
	char *pidfile = argc > 1 ? argv[1] : "supervisor.pid";
	struct fpool_config cfg;
	struct fpool_pool *pool = NULL;
	int r;

	/* stdout is a pipe in a worker: line-buffer it (fork passes this on)
	 * so that each line reaches the master when printed. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	fpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.worker = &def;
	/* The master reads the workers' stdout and stderr from pipes and
	 * appends the lines to these files (SIGUSR1 reopens them). */
	cfg.stdout_file = argc > 2 ? argv[2] : "supervisor.stdout";
	cfg.stderr_file = argc > 3 ? argv[3] : "supervisor.stderr";
	/* Heartbeats come from the worker's loop: a worker stuck (or stopped
	 * by SIGSTOP) for 5 s is killed with SIGKILL and replaced. */
	cfg.worker_timeout = 5;
	cfg.graceful_timeout = 10; /* s a stopping worker may take */
	if ((r = fpool_pool_new(&pool, &cfg)) == 0 &&
	    (r = fpool_pool_on_start(pool, write_pidfile, pidfile)) == 0 &&
	    (r = fpool_pool_on_shutdown(pool, remove_pidfile, pidfile)) == 0)
		r = fpool_pool_run(pool); /* until SIGTERM or SIGINT */
	if (r != 0)
		fprintf(stderr, "supervisor: %s\n", fpool_strerror(r));
	fpool_pool_free(pool);
	return r == 0 ? 0 : 1;
}
