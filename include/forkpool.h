/*
 * forkpool — a pre-fork process pool server.
 *
 * A master process binds the listening sockets, forks N workers, watches
 * them and replaces any that die or hang.  Each worker builds its own
 * libevent loop and runs its on_start hooks, then main, then its
 * on_shutdown hooks.  SIGTERM stops a worker gracefully, SIGINT
 * interrupts it.
 *
 * Conventions: functions that can fail return 0 or a negative errno value;
 * fpool_strerror() turns it into text.  Every fpool_*_free(NULL) is a no-op.
 * Callbacks end in _cb.  The library never calls exit() in the master.
 *
 * Threads, fork, signals and reaping:
 *
 * - One pool per process at a time.  The log sink, the systemd notify
 *   state and the signal dispositions are the process's, not the pool's:
 *   two pools created side by side are not supported (one run after the
 *   other, each freed before the next is created, is fine).
 * - Nothing here is thread-safe, and the process must be single-threaded
 *   when fpool_pool_run() forks (at start, at each respawn, reload or
 *   scale: any time the pool runs): a thread's locks (malloc's, stdio's)
 *   would stay held forever in the child.  Call every fpool_pool_* and
 *   fpool_log* function from the thread that runs the pool, in the
 *   master hooks or the callbacks of fpool_pool_base()'s events.
 * - Nothing here is async-signal-safe: call no fpool_* function from a
 *   signal handler.  Use libevent signal events on the pool's (or the
 *   worker's) base instead, or fpool_pool_stop() from one of its events.
 * - While fpool_pool_run() runs, the master handles SIGTERM, SIGINT,
 *   SIGQUIT, SIGHUP, SIGCHLD, SIGTTIN, SIGTTOU, SIGUSR1 and SIGUSR2 through
 *   its loop, and ignores SIGPIPE (a write to a peer that left fails with
 *   EPIPE instead), SIGTSTP, SIGALRM and the other signals whose default
 *   would end or stop it (DESIGN.md lists them); the program's own
 *   dispositions are back when it returns.  Workers start with every
 *   signal at its default, then SIGPIPE ignored.
 * - Reaping: the master waits for its own children only (its workers,
 *   and the check process of a binary upgrade).  A child the program
 *   started itself (in a master hook, say) is the program's to wait for,
 *   with waitpid() of its pid, never waitpid(-1), which would take the
 *   workers' exits from the master.  The master reaps every child, as an
 *   init must, when it runs as PID 1, when the process is a child
 *   subreaper (prctl(PR_SET_CHILD_SUBREAPER), checked when
 *   fpool_pool_run() starts) or when fpool_config.reap_all asks.
 * - In a worker: one thread runs the worker's loop; fpool_worker_* calls
 *   belong to it.  A worker may start threads of its own after on_start
 *   (the library forks nothing in a worker).
 */
#ifndef FORKPOOL_H
#define FORKPOOL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FPOOL_EXPORT	   __attribute__((visibility("default")))
#define FPOOL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define FPOOL_EXPORT
#define FPOOL_PRINTF(f, a)
#endif

/* ---- Version and ABI ---------------------------------------------------- */

/* The version of this header; fpool_version() tells the library's.  They
 * are meson.build's project version: the build fails if they drift. */
#define FPOOL_VERSION_MAJOR 0
#define FPOOL_VERSION_MINOR 1
#define FPOOL_VERSION_PATCH 0
#define FPOOL_VERSION	    "0.1.0"
/* 0xMMmmpp, to compare versions with #if (libuv's UV_VERSION_HEX). */
#define FPOOL_VERSION_HEX                                           \
	((FPOOL_VERSION_MAJOR << 16) | (FPOOL_VERSION_MINOR << 8) | \
	 FPOOL_VERSION_PATCH)
/*
 * The ABI: what a compiled program or worker module relies on (struct
 * layouts other than struct fpool_config's tail, callback types,
 * function signatures).  It grows by one at every incompatible change.
 * FPOOL_WORKER_MODULE() stamps a module with the number it was built
 * against and the loader refuses any other; struct fpool_config carries
 * its own size instead (see there), so a field added to it is no break.
 */
#define FPOOL_ABI_VERSION 1

/* The library's version ("0.1.0") and ABI number, which may differ from
 * the header's a program was built with. */
FPOOL_EXPORT const char *fpool_version(void);
FPOOL_EXPORT unsigned fpool_abi_version(void);

/* Exit status of a worker whose start failed (an on_start hook or the
 * worker's setup failed).  The master counts it as a failed start. */
#define FPOOL_EXIT_START_FAILED 3

/* Upper bound on the pool size, so a typo cannot fork-bomb the machine. */
#define FPOOL_MAX_WORKERS 4096

struct event;
struct event_base;
struct fpool_pool;
struct fpool_worker;

/* ---- Errors and logging ------------------------------------------------ */

/* Text for a value returned by a forkpool function (0 or -errno). */
FPOOL_EXPORT const char *fpool_strerror(int err);
/* Non-zero if the len bytes at s are well-formed UTF-8: no overlong form,
 * surrogate or code point past U+10FFFF.  yajl lets those through, and
 * decodes the escape of a lone surrogate ("\udc00") into one of them, so
 * a worker that writes back strings it parsed checks them with this. */
FPOOL_EXPORT int fpool_utf8_valid(const char *s, size_t len);
/* Check JSON text before yajl_tree_parse() sees it, for what yajl would
 * take but not hold as sent: a NUL byte (the parser reads a C string),
 * ill-formed UTF-8, nesting deeper than max_depth (yajl_tree_free()
 * recurses once per level), a "\u0000" escape (yajl's strings end at the
 * first NUL) and the escape of a lone UTF-16 surrogate (yajl decodes it
 * into another character, or into bytes that are not UTF-8).  Comments,
 * which yajl_tree_parse() always allows, are skipped, or refused with
 * FPOOL_JSON_NO_COMMENTS.  NULL if the text may be parsed (syntax errors
 * are the parser's to find), else why not: a constant string.  Strings
 * of a tree parsed after this check are well-formed UTF-8. */
#define FPOOL_JSON_NO_COMMENTS 0x1u
FPOOL_EXPORT const char *fpool_json_check(const char *s, size_t len,
					  unsigned max_depth, unsigned flags);

enum fpool_log_level {
	FPOOL_LOG_DEBUG,
	FPOOL_LOG_INFO,
	FPOOL_LOG_WARNING,
	FPOOL_LOG_ERROR,
};

/* Log one record at `level`.  In the master it carries the origin
 * "master"; in a worker "worker ID pid PID". */
FPOOL_EXPORT void fpool_log(enum fpool_log_level level, const char *fmt, ...)
	FPOOL_PRINTF(2, 3);
/* A key/value pair attached to a log record. */
struct fpool_log_field {
	const char *key;
	const char *value;
};

/* Log one record with key/value fields (text: `key=value` after the
 * message; JSON: a "fields" object). */
FPOOL_EXPORT void fpool_log_fields(enum fpool_log_level level,
				   const struct fpool_log_field *fields,
				   size_t nfields, const char *fmt, ...)
	FPOOL_PRINTF(4, 5);

enum fpool_log_format {
	FPOOL_LOG_TEXT, /* one human line per record */
	FPOOL_LOG_JSON, /* one JSON object per line */
};

/* Send the master's log to `path` (NULL: stderr) in `format`.  The file
 * is opened for appending; fpool_log_reopen() opens it anew (logrotate).
 * 0 or -errno. */
FPOOL_EXPORT int fpool_log_open(const char *path, enum fpool_log_format format);
/* Reopen the log file.  0 or -errno; on failure the old file stays. */
FPOOL_EXPORT int fpool_log_reopen(void);

/* Records below `level` are dropped. */
FPOOL_EXPORT void fpool_log_set_level(enum fpool_log_level level);
/* Parse "debug", "info", "warning" or "error"; 0 or -EINVAL. */
FPOOL_EXPORT int fpool_log_level_parse(const char *s,
				       enum fpool_log_level *out);

/* ---- Describing a worker ----------------------------------------------- */

/* A worker hook: on_start, on_stop or on_shutdown.  Return 0 on success;
 * a non-zero on_start result makes the worker exit as a failed start.
 * `arg` is the pointer given when the hook was connected. */
typedef int (*fpool_worker_hook_cb)(struct fpool_worker *w, void *arg);

/* A worker's main.  Either event-driven (add events to
 * fpool_worker_base() and return fpool_worker_loop()) or blocking
 * (loop while fpool_worker_is_running()).  Its result is the exit status. */
typedef int (*fpool_worker_main_cb)(struct fpool_worker *w, void *arg);

/*
 * What a worker is.  Built-in workers, worker modules (.so) and programs
 * using the library all describe their worker with this struct.
 */
struct fpool_worker_def {
	const char *name;	 /* short name, e.g. "echo" */
	const char *description; /* one line for --help */
	/* Called first in a new worker process, with the worker arguments
	 * (those after `--` on the command line; argv[0] is the worker's
	 * name).  It may connect more hooks with fpool_worker_on_*().
	 * Non-zero: the start failed.  May be NULL. */
	int (*setup)(struct fpool_worker *w, int argc, char **argv);
	fpool_worker_hook_cb on_start;	  /* first on_start hook, or NULL */
	fpool_worker_hook_cb on_stop;	  /* first on_stop hook, or NULL */
	fpool_worker_hook_cb on_shutdown; /* first on_shutdown hook, or NULL */
	fpool_worker_main_cb main;	  /* required */
	void *arg; /* passed to the hooks and main above */
};

/*
 * A worker module (a .so given to `forkpool --worker PATH.so`) exports its
 * definition under this symbol name:
 *
 *     FPOOL_WORKER_MODULE(my_def);
 *
 * expands to an exported `const struct fpool_worker_def *fpool_worker_module`
 * and the module's ABI stamp, an exported `const unsigned
 * fpool_worker_module_abi` = the FPOOL_ABI_VERSION of the header it was
 * built with.  The loader refuses a module without the stamp, or with
 * another ABI number, naming the file (the CLI exits with status 2):
 * rebuild it against this forkpool.h.
 */
/* Declared here, exported, so that the definitions the macro makes are
 * exported (even under -fvisibility=hidden) and, in C++ too, have
 * external C linkage. */
FPOOL_EXPORT extern const unsigned fpool_worker_module_abi;
FPOOL_EXPORT extern const struct fpool_worker_def *fpool_worker_module;
#define FPOOL_WORKER_SYMBOL	"fpool_worker_module"
#define FPOOL_WORKER_ABI_SYMBOL "fpool_worker_module_abi"
#define FPOOL_WORKER_MODULE(def)                                    \
	const unsigned fpool_worker_module_abi = FPOOL_ABI_VERSION; \
	const struct fpool_worker_def *fpool_worker_module = &(def)

/* ---- The pool (master side) -------------------------------------------- */

/*
 * Pool settings.  Initialise with fpool_config_init(), then change fields.
 *
 * ABI: the caller allocates this struct, and a later version may add
 * fields at its end.  fpool_config_init() is a macro that hands the
 * library the size of the struct as the caller's header declares it; the
 * library writes only that many bytes and records the size in
 * `struct_size`.  Every function that reads a config reads only that
 * many bytes and takes the defaults for fields past them, so a program
 * built against an older header works with a newer library.  A config
 * larger than the library knows (a program built against a newer header,
 * run with an older library) is accepted if the bytes the library does
 * not know are all zero (the new fields left at their defaults), and
 * refused with -E2BIG otherwise: a setting the library cannot honour is
 * never dropped silently (Linux's clone3()/openat2() rule).  A config
 * not initialised by fpool_config_init() (struct_size 0) is refused with
 * -EINVAL.  (Chosen over an opaque config with setters because every
 * existing program keeps compiling unchanged and fields stay plain
 * assignments; the price is this one rule: never change struct_size.)
 */
struct fpool_config {
	size_t struct_size;	 /* set by fpool_config_init(); do not change */
	unsigned workers;	 /* pool size, 1..FPOOL_MAX_WORKERS */
	double worker_timeout;	 /* s without heartbeat before SIGKILL */
	double graceful_timeout; /* s a stopping worker may take */
	double check_interval;	 /* s between master checks; heartbeat period */
	double min_uptime;	 /* s a worker must live to count as started */
	const struct fpool_worker_def *worker; /* what every slot runs */
	int worker_argc;    /* arguments handed to def->setup */
	char **worker_argv; /* (not copied: must outlive the pool) */
	/* Files for captured worker stdout/stderr lines; NULL: the log. */
	const char *stdout_file;
	const char *stderr_file;
	unsigned output_lines;	  /* last lines kept per slot for `output` */
	const char *control_path; /* control socket (unix), or NULL */
	/* Restart intensity: more than max_restarts failed starts within
	 * restart_window seconds stop the pool, and fpool_pool_run()
	 * returns -ECHILD.  0: never give up. */
	unsigned max_restarts;
	double restart_window; /* default 60 */
	/* Recycling: a worker is replaced (through the rolling path) after
	 * serving max_requests (+ a random 0..max_requests_jitter of its
	 * own), after living max_lifetime seconds (+ up to 10% of it), or
	 * once its RSS passes max_rss_mib.  0: never. */
	uint64_t max_requests;
	uint64_t max_requests_jitter;
	double max_lifetime;
	unsigned max_rss_mib;
	/* Workers drop to this user and group (names) before on_start;
	 * NULL: keep the master's. */
	const char *user;
	const char *group;
	/* Detach (double fork, setsid, chdir /, stdio to /dev/null) before
	 * the first fork of a worker. */
	int daemonize;
	/* Write the master's pid here, held with a lock; removed at exit. */
	const char *pidfile;
	/* Each worker listens on a TCP socket of its own (SO_REUSEPORT) and
	 * the kernel spreads connections, instead of sharing the master's. */
	int reuse_port;
	/* Instead of `worker` (which must then be NULL): the path of a
	 * worker module (a .so exporting FPOOL_WORKER_SYMBOL) that each new
	 * worker loads after fork, so a rolling reload runs the file on
	 * disk now; the master never maps it.  It is checked in a test
	 * process at start and before each reload, which is refused if it
	 * cannot be loaded.  Deploy a new version by renaming it over the
	 * path, never by writing into the old file. */
	const char *worker_module;
	/* Instead of `worker` and `worker_module`: every worker execs this
	 * program (looked up in PATH as execvp does) with worker_argv as
	 * its argv, handed its listeners and told where to notify as
	 * systemd does (LISTEN_FDS, NOTIFY_SOCKET; see DESIGN.md). */
	const char *exec_program;
	/* With exec_program: 0 (systemd's Type=exec), a worker is ready
	 * once execve() succeeded and alive while it exists; 1
	 * (Type=notify), ready on READY=1, alive while it sends
	 * WATCHDOG=1 within worker_timeout. */
	int exec_notify;
	/* With exec_program: the signal of a graceful stop (0: SIGTERM). */
	int exec_stop_signal;
	/* Non-zero: the master reaps every child of its process (waitpid
	 * of any pid), not only the pool's own, as an init must.  It does
	 * so anyway when it runs as PID 1 or is a child subreaper
	 * (prctl(PR_SET_CHILD_SUBREAPER)); see "Threads, fork, signals and
	 * reaping" above.  0: a child the program started itself (e.g. in
	 * a master hook) is left for the program to wait for. */
	int reap_all;
	/* New fields go here, at the end (struct_size says what a caller
	 * knows of), each at or past the previous version's sizeof, never
	 * in its tail padding: a struct assignment need not copy padding. */
};

/* Fill the first `size` bytes of `cfg` with the defaults (workers =
 * number of CPUs, timeouts 30 s, check interval 1 s, min uptime 1 s, no
 * worker, 0 for what is not named) and record `size` in struct_size.
 * Bytes past what the library knows are zeroed, none past `size` is
 * touched.  Call it through fpool_config_init(), which passes the size
 * of the caller's struct; `size` must be at least sizeof(size_t). */
FPOOL_EXPORT void fpool_config_init_size(struct fpool_config *cfg, size_t size);
#define fpool_config_init(cfg) \
	fpool_config_init_size((cfg), sizeof(struct fpool_config))

/* A master hook, run in the master before the first fork (on_start) or
 * after the last worker exited (on_shutdown). */
typedef int (*fpool_pool_hook_cb)(struct fpool_pool *pool, void *arg);

/* Create a pool; the config is copied.  0 or -EINVAL/-ENOMEM. */
FPOOL_EXPORT int fpool_pool_new(struct fpool_pool **out,
				const struct fpool_config *cfg);
/* Bind a listener ("HOST:PORT", "[V6]:PORT" or "unix:PATH") that every
 * worker inherits.  0, -EINVAL for a bad address, or the bind error. */
FPOOL_EXPORT int fpool_pool_listen(struct fpool_pool *pool, const char *addr);
/* Use an already bound, listening socket (e.g. passed by systemd socket
 * activation) as a listener; the pool takes it over.  0 or -errno. */
FPOOL_EXPORT int fpool_pool_listen_fd(struct fpool_pool *pool, int fd);
/* Keep `fd` open in every worker (it is closed in workers otherwise). */
FPOOL_EXPORT int fpool_preserve_fd(struct fpool_pool *pool, int fd);
/* Connect a master hook; hooks run in the order they were connected. */
FPOOL_EXPORT int fpool_pool_on_start(struct fpool_pool *pool,
				     fpool_pool_hook_cb cb, void *arg);
FPOOL_EXPORT int fpool_pool_on_shutdown(struct fpool_pool *pool,
					fpool_pool_hook_cb cb, void *arg);
/* The master's event loop, for a program's own master-side events. */
FPOOL_EXPORT struct event_base *fpool_pool_base(struct fpool_pool *pool);
/* Run the master: hooks, fork the workers, serve until SIGTERM/SIGINT/
 * SIGQUIT or fpool_pool_stop(), shut down.  0, or a negative errno. */
FPOOL_EXPORT int fpool_pool_run(struct fpool_pool *pool);
/* Ask a running pool to stop: gracefully (SIGTERM to workers) or not
 * (SIGINT).  Returns at once; fpool_pool_run() returns when done. */
FPOOL_EXPORT void fpool_pool_stop(struct fpool_pool *pool, int graceful);
/* Start a worker in slot `id` (an id >= the pool size grows the pool).
 * -EEXIST if that slot already runs one. */
FPOOL_EXPORT int fpool_pool_add_worker(struct fpool_pool *pool, unsigned id);
/* Stop the worker in slot `id` gracefully and do not replace it.
 * -ENOENT if no such slot is active; -EBUSY for the last one. */
FPOOL_EXPORT int fpool_pool_remove_worker(struct fpool_pool *pool, unsigned id);
/* Rolling reload: replace every worker, one slot at a time, each
 * replacement ready before its old worker is stopped gracefully.
 * A reload asked during a reload starts over.  0 or -ESHUTDOWN. */
FPOOL_EXPORT int fpool_pool_reload(struct fpool_pool *pool);
/* Number of slots meant to run a worker. */
FPOOL_EXPORT unsigned fpool_pool_size(const struct fpool_pool *pool);
/* Free the pool, close its listeners (removing unix socket files). */
FPOOL_EXPORT void fpool_pool_free(struct fpool_pool *pool);

/* ---- Inside a worker --------------------------------------------------- */

/* The worker's logical slot id (0..N-1); it survives respawns. */
FPOOL_EXPORT unsigned fpool_worker_id(const struct fpool_worker *w);
/* The worker's process id. */
FPOOL_EXPORT pid_t fpool_worker_pid(const struct fpool_worker *w);
/* The worker's own event loop (a fresh one, not the master's). */
FPOOL_EXPORT struct event_base *fpool_worker_base(struct fpool_worker *w);
/* The listening sockets inherited from the master; sets *n. */
FPOOL_EXPORT const int *fpool_worker_listeners(const struct fpool_worker *w,
					       size_t *n);
/* Connect hooks; each list runs in the order hooks were connected. */
FPOOL_EXPORT int fpool_worker_on_start(struct fpool_worker *w,
				       fpool_worker_hook_cb cb, void *arg);
FPOOL_EXPORT int fpool_worker_on_stop(struct fpool_worker *w,
				      fpool_worker_hook_cb cb, void *arg);
FPOOL_EXPORT int fpool_worker_on_shutdown(struct fpool_worker *w,
					  fpool_worker_hook_cb cb, void *arg);
/* A pointer of the worker's own, for state shared by its hooks. */
FPOOL_EXPORT void fpool_worker_set_data(struct fpool_worker *w, void *data);
FPOOL_EXPORT void *fpool_worker_data(const struct fpool_worker *w);
/* For blocking mains: run one non-blocking loop turn (signals, heartbeat)
 * and tell whether the worker should go on. */
FPOOL_EXPORT int fpool_worker_is_running(struct fpool_worker *w);
/* For event-driven mains: run the loop until the worker is stopped and
 * its own events are gone (SIGTERM), or at once (SIGINT).  0 or -errno. */
FPOOL_EXPORT int fpool_worker_loop(struct fpool_worker *w);
/* Stop the worker gracefully, as SIGTERM does (on_stop hooks run). */
FPOOL_EXPORT void fpool_worker_stop(struct fpool_worker *w);
/*
 * Unref an event of the worker's base (libuv's uv_unref()): once the
 * worker is stopping, fpool_worker_loop() ends when only unref'd events
 * are left (and the library's own), instead of waiting for them until
 * the graceful timeout kills the worker.  For what lives as long as the
 * worker but is no in-flight work: a persistent housekeeping timer, a
 * watch on a pipe.  Before the stop an unref'd event works as any other.
 * fpool_worker_ref() undoes it.  Both are idempotent; 0, or -EINVAL for
 * an event of another base, -ENOMEM.  The event is known by its address,
 * callback and argument and never dereferenced after: freeing an unref'd
 * event is fine, but call fpool_worker_ref() first if a new event may get
 * its address, callback and argument.  On_shutdown hooks still run after
 * the loop; free the unref'd events there.
 */
FPOOL_EXPORT int fpool_worker_unref(struct fpool_worker *w, struct event *ev);
FPOOL_EXPORT int fpool_worker_ref(struct fpool_worker *w, struct event *ev);
/* Non-zero once the worker was interrupted (SIGINT): main was cancelled. */
FPOOL_EXPORT int fpool_worker_interrupted(const struct fpool_worker *w);
/* Say what the worker is busy with (printf-style; NULL: nothing), e.g.
 * the request it serves.  The master reads it from shared memory, so the
 * log of a hung worker's kill can tell what it was doing. */
FPOOL_EXPORT void fpool_worker_set_activity(struct fpool_worker *w,
					    const char *fmt, ...)
	FPOOL_PRINTF(2, 3);
/* Count `n` more requests served; reported with the heartbeat. */
FPOOL_EXPORT void fpool_worker_count_requests(struct fpool_worker *w,
					      uint64_t n);

/* ---- Messages between the master and its workers ------------------------ */

/*
 * A message is up to FPOOL_MESSAGE_MAX bytes of anything (text, JSON,
 * binary), one packet of the worker's channel to the master (a unix
 * SOCK_SEQPACKET socket pair, the one that carries "ready", heartbeats and
 * log records).  Each way, the messages of one worker arrive whole and in
 * the order they were sent.  Nothing is queued in user space: the
 * channel's socket buffer (about 200 KiB, a few hundred small messages) is
 * the queue, and a send that does not fit fails at once with -EAGAIN
 * rather than wait for a peer that does not read.
 *
 * Master to worker: a message to a worker still starting waits in its
 * channel and is delivered once it runs its loop (after its on_start
 * hooks, so a callback set there sees every message).  A worker that is
 * stopping reads no more messages; what waits in its channel when it exits
 * is dropped.  Exec'd workers (-k exec) take none (-EOPNOTSUPP).
 * Worker to master: delivered in the master's loop, in order with the
 * worker's log records.
 */
#define FPOOL_MESSAGE_MAX 65536
/* fpool_pool_send()'s id for every worker of the pool. */
#define FPOOL_ALL_WORKERS ((unsigned)-1)

/* In a worker: a message from the master, delivered in the worker's loop.
 * `data` is valid during the call only. */
typedef void (*fpool_worker_message_cb)(struct fpool_worker *w,
					const void *data, size_t len,
					void *arg);
/* Set (or, cb NULL, clear) the callback for the master's messages.
 * Without one, messages are read and dropped.  0. */
FPOOL_EXPORT int fpool_worker_on_message(struct fpool_worker *w,
					 fpool_worker_message_cb cb, void *arg);
/* Send `len` bytes to the master.  0, -EMSGSIZE (over FPOOL_MESSAGE_MAX),
 * -EAGAIN (the channel is full: the master is behind; try again later),
 * -EPIPE (the master is gone) or another -errno. */
FPOOL_EXPORT int fpool_worker_send(struct fpool_worker *w, const void *data,
				   size_t len);

/* In the master: a message from the worker of slot `id`, delivered in the
 * pool's loop.  `data` is valid during the call only.  The callback may
 * call fpool_pool_send(), fpool_pool_stop() and the other fpool_pool_*
 * calls except fpool_pool_free(). */
typedef void (*fpool_pool_message_cb)(struct fpool_pool *pool, unsigned id,
				      const void *data, size_t len, void *arg);
/* Set (or clear) the callback for the workers' messages.  Without one the
 * master logs each (at info, its first bytes).  0. */
FPOOL_EXPORT int fpool_pool_on_message(struct fpool_pool *pool,
				       fpool_pool_message_cb cb, void *arg);
/* Send `len` bytes to the current worker of slot `id` (the one serving,
 * not a replacement starting during a reload nor one draining), or to
 * the current worker of every slot with FPOOL_ALL_WORKERS.  The number of
 * workers it was sent to (1 for one slot), or -ENOENT (no such slot, or
 * the slot has no worker that will read it: none, or stopping; for
 * FPOOL_ALL_WORKERS: no worker at all), -EMSGSIZE, -EAGAIN (that
 * worker's channel is full: it does not read its messages),
 * -EOPNOTSUPP (an exec'd worker).  With FPOOL_ALL_WORKERS, a worker whose
 * channel is full is skipped (and logged); the others get it. */
FPOOL_EXPORT int fpool_pool_send(struct fpool_pool *pool, unsigned id,
				 const void *data, size_t len);

/* ---- Worker events and the pool's snapshot (master side) ----------------- */

enum fpool_worker_event_type {
	FPOOL_WORKER_STARTED, /* forked (the master's side of the fork) */
	FPOOL_WORKER_READY,   /* it said "ready": it serves */
	FPOOL_WORKER_EXITED,  /* it exited and was reaped */
};

/*
 * ABI: the library owns the event and passes a pointer that is valid
 * during the callback only; a program never allocates, copies by size or
 * keeps one.  Later versions only append fields, so a program reads the
 * fields it knows and stays right.
 */
struct fpool_worker_event {
	enum fpool_worker_event_type type;
	unsigned id; /* the slot */
	pid_t pid;
	int status; /* EXITED: the waitpid() status (WIFEXITED...); else 0 */
};

/* Called in the pool's loop.  The callback may call the fpool_pool_*
 * functions except fpool_pool_free(); a worker it asks to stop or kill
 * gets its own events later, never from inside this call. */
typedef void (*fpool_pool_worker_cb)(struct fpool_pool *pool,
				     const struct fpool_worker_event *ev,
				     void *arg);
/* Set (or clear) the callback for worker events.  0. */
FPOOL_EXPORT int fpool_pool_on_worker(struct fpool_pool *pool,
				      fpool_pool_worker_cb cb, void *arg);

/*
 * One process of a slot, or a slot waiting in backoff (pid 0), as
 * fpool_pool_snapshot() shows it.  ABI as struct fpool_worker_event: the
 * library owns it (valid during the callback), fields are only appended.
 */
struct fpool_worker_info {
	unsigned id;
	pid_t pid;	   /* 0: the slot waits in backoff, no process */
	const char *state; /* "starting", "ready", "stopping", "backoff" */
	/* "worker" (the slot's current one), "replacement" (starting
	 * during a reload), "draining" (replaced); NULL in backoff. */
	const char *role;
	unsigned generation;   /* reloads of the pool before it was forked */
	double uptime;	       /* seconds since fork */
	double heartbeat_age;  /* seconds since the worker last said anything */
	double backoff_left;   /* in backoff: seconds to the next start */
	unsigned restarts;     /* the slot's respawns */
	const char *last_exit; /* how its last process ended, or NULL */
	uint64_t requests;     /* the worker's counter, at its last heartbeat */
	const char *activity;  /* fpool_worker_set_activity()'s, or "" */
};
/* Return non-zero to stop the walk. */
typedef int (*fpool_pool_snapshot_cb)(struct fpool_pool *pool,
				      const struct fpool_worker_info *w,
				      void *arg);
/* Call cb for every process of every slot, in slot order (a slot's
 * current worker, then its replacement and the one draining), and for
 * each slot in backoff.  0, or what a non-zero cb returned.  `forkpool
 * ctl status` is built on it. */
FPOOL_EXPORT int fpool_pool_snapshot(struct fpool_pool *pool,
				     fpool_pool_snapshot_cb cb, void *arg);

/* ---- Accepting connections (in a worker or in the master) -------------- */

/*
 * An acceptor takes the connections of one listening socket from an
 * event loop.  When accept() fails for lack of a resource (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) it pauses for 100 ms and tries again, leaving
 * the connection queued, instead of spinning on a socket that stays
 * readable; such a run of failures is logged once when it starts and once
 * when accepting works again.  Errors of a single connection (reset while
 * queued, ECONNABORTED...) drop that connection only.
 */
struct fpool_acceptor;

/* A new connection: `fd` is non-blocking and close-on-exec, and now the
 * callback's to close; `sa` is the peer's address (`salen` bytes).  The
 * callback may free the acceptor. */
typedef void (*fpool_accept_cb)(struct fpool_acceptor *a, int fd,
				const struct sockaddr *sa, socklen_t salen,
				void *arg);

/* fpool_acceptor_free() also closes the listening socket (in this
 * process: a worker's copy of a listener it shares with the pool). */
#define FPOOL_ACCEPT_CLOSE 1u

/* Accept on the listening socket `fd` (non-blocking) from `base`, calling
 * `cb` for every connection.  `flags`: 0 or FPOOL_ACCEPT_CLOSE.  0 and
 * *out, or -EINVAL/-ENOMEM (then `fd` stays open whatever the flags). */
FPOOL_EXPORT int fpool_acceptor_new(struct fpool_acceptor **out,
				    struct event_base *base, int fd,
				    unsigned flags, fpool_accept_cb cb,
				    void *arg);
/* Stop (on = 0) or resume (on != 0) taking connections; they queue in
 * the kernel meanwhile.  0 or -ENOMEM. */
FPOOL_EXPORT int fpool_acceptor_enable(struct fpool_acceptor *a, int on);
/* The listening socket. */
FPOOL_EXPORT int fpool_acceptor_fd(const struct fpool_acceptor *a);
/* Stop accepting and free the acceptor (closing the socket with
 * FPOOL_ACCEPT_CLOSE).  NULL is a no-op. */
FPOOL_EXPORT void fpool_acceptor_free(struct fpool_acceptor *a);

/* Parse a duration as forkpool's flags take it ("1", "0.25", "250ms",
 * "2s", "1.5m"): more than 0, at most a week.  0 and *seconds, or -EINVAL
 * (malformed) or -ERANGE. */
FPOOL_EXPORT int fpool_duration_parse(const char *s, double *seconds);

#ifdef __cplusplus
}
#endif
#endif /* FORKPOOL_H */
