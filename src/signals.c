/*
 * The master's signals: the one table of what each signal does, and its
 * handlers.  Signals are libevent signal events on the master's base, so
 * their callbacks are ordinary loop callbacks that may change state and
 * fork; nothing runs in a real signal handler (pgbouncer's and httpd's
 * habit).  A worker resets every signal to its default (worker.c).
 */
#include <errno.h>
#include <signal.h>

#include <event2/event.h>

#include "fpool-int.h"

typedef void (*pool_signal_fn)(struct fpool_pool *pool, int signo);

static void on_stop_signal(struct fpool_pool *pool, int signo);
static void on_sigchld(struct fpool_pool *pool, int signo);
static void on_ttin(struct fpool_pool *pool, int signo);
static void on_ttou(struct fpool_pool *pool, int signo);
static void on_hup(struct fpool_pool *pool, int signo);
static void on_usr1(struct fpool_pool *pool, int signo);
static void on_usr2(struct fpool_pool *pool, int signo);

/*
 * The master's signal table (nginx's habit): what each signal does, the
 * one list of it.  A signal with a function is a libevent signal event on
 * the master's loop; one without is ignored (SIG_IGN), because its
 * default action would end or stop the master, and with it the pool:
 * a stray ALRM, a timer signal, SIGXFSZ once a log reaches
 * RLIMIT_FSIZE (the write then fails with EFBIG, which the log reports),
 * Ctrl-Z (TSTP).  The real-time signals are ignored too (pool_signals).
 * Every worker resets all of them to their defaults (fpool__signals_default).
 */
static const struct {
	int signo;
	pool_signal_fn fn; /* NULL: ignored */
} signal_table[] = {
	{ SIGTERM, on_stop_signal }, /* graceful stop */
	{ SIGQUIT, on_stop_signal }, /* graceful stop, as nginx does */
	{ SIGINT, on_stop_signal },  /* interrupt */
	{ SIGCHLD, on_sigchld },     /* reap and respawn */
	{ SIGTTIN, on_ttin },	     /* one worker more */
	{ SIGTTOU, on_ttou },	     /* one worker fewer */
	{ SIGHUP, on_hup },	     /* rolling reload */
	{ SIGUSR1, on_usr1 },	     /* reopen log files (logrotate) */
	{ SIGUSR2, on_usr2 },	     /* binary upgrade in place (upgrade.c) */
	{ SIGPIPE, NULL }, /* a write to a peer that left fails with EPIPE */
	{ SIGTSTP, NULL }, /* Ctrl-Z must not stop the pool's supervisor */
	{ SIGALRM, NULL },	     { SIGIO, NULL },	  { SIGPWR, NULL },
	{ SIGVTALRM, NULL },	     { SIGPROF, NULL },	  { SIGXCPU, NULL },
	{ SIGXFSZ, NULL },	     { SIGSTKFLT, NULL }, { SIGSYS, NULL },
};

static void on_stop_signal(struct fpool_pool *pool, int signo)
{
	fpool_log(FPOOL_LOG_INFO, "got %s", fpool__signame(signo));
	fpool_pool_stop(pool, signo != SIGINT);
}

static void on_sigchld(struct fpool_pool *pool, int signo)
{
	(void)signo;
	fpool__pool_reap_sigchld(pool);
}

static void on_ttin(struct fpool_pool *pool, int signo)
{
	unsigned id;
	int err;

	(void)signo;
	if (pool->state != POOL_RUNNING)
		return;
	err = fpool__pool_grow_one(pool, &id);
	if (err == -EMFILE)
		fpool_log(FPOOL_LOG_WARNING,
			  "SIGTTIN: cannot add worker %u: the pool would not "
			  "fit the open file limit (%llu)",
			  id, (unsigned long long)pool->nofile);
	else if (err != 0)
		fpool_log(FPOOL_LOG_WARNING,
			  "SIGTTIN: cannot add worker %u: %s", id,
			  fpool_strerror(err));
	else
		fpool_log(FPOOL_LOG_INFO, "SIGTTIN: added worker %u (%u now)",
			  id, fpool_pool_size(pool));
}

static void on_ttou(struct fpool_pool *pool, int signo)
{
	unsigned id;
	int err;

	(void)signo;
	if (pool->state != POOL_RUNNING)
		return;
	err = fpool__pool_shrink_one(pool, &id);
	if (err != 0)
		fpool_log(FPOOL_LOG_WARNING,
			  "SIGTTOU: not removing worker %u: %s", id,
			  err == -EBUSY ? "it is the last one"
					: fpool_strerror(err));
	else
		fpool_log(FPOOL_LOG_INFO,
			  "SIGTTOU: removing worker %u (%u left)", id,
			  fpool_pool_size(pool));
}

static void on_hup(struct fpool_pool *pool, int signo)
{
	fpool_log(FPOOL_LOG_INFO, "got %s", fpool__signame(signo));
	fpool_pool_reload(pool);
}

static void on_usr1(struct fpool_pool *pool, int signo)
{
	int err, out = 0;

	(void)signo;
	err = fpool_log_reopen();
	if (err != 0)
		fpool__log_errno(FPOOL_LOG_ERROR, -err,
				 "SIGUSR1: cannot reopen the log file; still "
				 "writing to the old one");
	for (int i = 0; i < 2; i++) {
		int r = pool->out[i] != NULL ? fpool__sink_reopen(pool->out[i])
					     : 0;

		if (r != 0) {
			fpool__log_errno(FPOOL_LOG_ERROR, -r,
					 "SIGUSR1: cannot reopen the worker "
					 "%s file",
					 i ? "stderr" : "stdout");
			out = r;
		}
	}
	fpool_log(err || out ? FPOOL_LOG_WARNING : FPOOL_LOG_INFO,
		  "SIGUSR1: log files reopened%s",
		  err || out ? " (not all: see above)" : "");
}

static void on_usr2(struct fpool_pool *pool, int signo)
{
	fpool_log(FPOOL_LOG_INFO, "got %s", fpool__signame(signo));
	/* A refusal is logged there. */
	(void)fpool__upgrade_start(pool, NULL);
}

static void pool_signal_cb(evutil_socket_t signo, short what, void *arg)
{
	struct fpool_pool *pool = arg;

	(void)what;
	for (size_t i = 0; i < FPOOL_NELEM(signal_table); i++)
		if (signal_table[i].signo == (int)signo)
			signal_table[i].fn(pool, (int)signo);
}

/* Ignore a signal while the pool runs; pool_events_del() puts back
 * what the program had. */
static void pool_ignore(struct fpool_pool *pool, int sig)
{
	struct sigaction ign = { .sa_handler = SIG_IGN };

	sigemptyset(&ign.sa_mask);
	if (pool->nignored >= FPOOL_NELEM(pool->ignored))
		return;
	if (sigaction(sig, &ign, &pool->ignored[pool->nignored].old) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno, "cannot ignore %s",
				 fpool__signame(sig));
		return;
	}
	pool->ignored[pool->nignored++].sig = sig;
}

int fpool__signals_install(struct fpool_pool *pool)
{
	for (size_t i = 0; i < FPOOL_NELEM(signal_table); i++) {
		struct event *ev;

		if (signal_table[i].fn == NULL) {
			pool_ignore(pool, signal_table[i].signo);
			continue;
		}
		ev = evsignal_new(pool->base, signal_table[i].signo,
				  pool_signal_cb, pool);
		if (ev == NULL || evsignal_add(ev, NULL) != 0) {
			fpool_log(FPOOL_LOG_ERROR, "cannot handle %s",
				  fpool__signame(signal_table[i].signo));
			if (ev != NULL)
				event_free(ev);
			return -ENOMEM;
		}
		pool->sigev[pool->nsigev++] = ev;
	}
	/* No one's real-time signal may end the pool either. */
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		pool_ignore(pool, sig);
	return 0;
}

void fpool__signals_remove(struct fpool_pool *pool)
{
	while (pool->nignored > 0) {
		pool->nignored--;
		sigaction(pool->ignored[pool->nignored].sig,
			  &pool->ignored[pool->nignored].old, NULL);
	}
	for (size_t i = 0; i < pool->nsigev; i++)
		event_free(pool->sigev[i]);
	pool->nsigev = 0;
}
