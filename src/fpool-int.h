/*
 * Internal declarations of libforkpool, grouped by source file.
 * Internal non-static names start with fpool__ (libuv's habit), so they can
 * never clash with the public fpool_ API.
 */
#ifndef FPOOL_INT_H
#define FPOOL_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "forkpool.h"

#define FPOOL_HIDDEN   __attribute__((visibility("hidden")))
#define FPOOL_NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct event;
struct event_base;
struct evbuffer;

/* ---- util.c ------------------------------------------------------------ */

/* Resident set size of a process in KiB (from /proc), or -1. */
long fpool__rss_kib(pid_t pid);
/* The memory page size in bytes. */
size_t fpool__page_size(void);
/* Monotonic clock in seconds. */
double fpool__now(void);
/* Unix time in seconds, with microseconds. */
double fpool__realtime(void);
/* A struct timeval for a duration in seconds (for event_add). */
struct timeval fpool__tv(double seconds);
/* Name of a signal ("SIGTERM"), or "signal N" in a static buffer. */
const char *fpool__signame(int sig);
/* Reset every signal a process can catch to its default action: what a
 * worker does first, since the master ignores or handles many (more than
 * the master's table: a program embedding the pool may have changed
 * others).  0, or -errno of the first failure, with *sig. */
int fpool__signals_default(int *sig);
/* Describe a wait status: "exited with status 1", "killed by SIGKILL". */
void fpool__describe_status(int status, char *buf, size_t len);
/* A growable array of (callback, arg) pairs: the hook lists. */
struct fpool__hook {
	void (*fn)(void);
	void *arg;
};
struct fpool__hooks {
	struct fpool__hook *v;
	size_t n, cap;
};
/* Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0
 * (overlong forms, surrogates, code points past U+10FFFF refused). */
size_t fpool__utf8_seq(const unsigned char *p, size_t n);
bool fpool__utf8_valid(const char *buf, size_t len);
/* A NUL-terminated, malloc'd copy of s that is valid UTF-8: every byte
 * that is not part of a well-formed sequence becomes U+FFFD, and so does
 * every NUL unless `keep_nul`.  NULL when out of memory. */
char *fpool__utf8_sanitize(const char *s, size_t len, bool keep_nul,
			   size_t *outlen);
int fpool__hooks_add(struct fpool__hooks *h, void (*fn)(void), void *arg);
void fpool__hooks_free(struct fpool__hooks *h);

/* ---- json.c: yajl helpers, log level names ---------------------------- */

/* "debug", "info", "warning", "error"; NULL for another value. */
const char *fpool__level_name(enum fpool_log_level level);
/* Add a string (len bytes, or up to its NUL), an integer, a null; true
 * if yajl took it. */
bool fpool__json_strn(yajl_gen g, const char *s, size_t len);
bool fpool__json_str(yajl_gen g, const char *s);
bool fpool__json_int(yajl_gen g, long long v);
bool fpool__json_null(yajl_gen g);
/* The value of `key` in an object (the first if repeated), or NULL (also
 * when obj is not an object). */
yajl_val fpool__json_get(yajl_val obj, const char *key);

/* ---- accept.c --------------------------------------------------------- */

/* Seconds an acceptor waits after accept() failed for lack of a resource
 * (fpool_acceptor_new() in forkpool.h). */
#define FPOOL_ACCEPT_PAUSE 0.1

/* ---- nbfd.c: writing to any fd without blocking ------------------------ */

enum fpool__fd_kind {
	FPOOL_FD_FILE,	 /* a regular file or /dev/null: writes never wait */
	FPOOL_FD_STREAM, /* a pipe, FIFO or tty opened non-blocking */
	FPOOL_FD_SOCKET, /* send(MSG_DONTWAIT) */
	FPOOL_FD_POLLED, /* a pipe that could not be reopened: poll first */
};
struct fpool__nbfd {
	enum fpool__fd_kind kind;
	int wfd; /* what is written to: the fd, or its non-blocking reopen */
};
/* How to write to fd without blocking (nbfd.c says how). */
void fpool__nbfd_init(struct fpool__nbfd *f, int fd);
/* Write what b starts with (up to 64 of its pieces, in one writev()).
 * The byte count (b is not drained), or -errno (-EAGAIN: no room). */
ssize_t fpool__nbfd_writev(const struct fpool__nbfd *f, struct evbuffer *b);
/* Wait until it takes bytes, up to `timeout` s (< 0: forever).  0,
 * -ETIMEDOUT or -errno. */
int fpool__nbfd_wait(const struct fpool__nbfd *f, double timeout);
/* Close a reopened wfd (not fd itself); write to fd plainly again. */
void fpool__nbfd_close(struct fpool__nbfd *f, int fd);
/* Open path for appending as sinks do (CLOEXEC, NONBLOCK, NOCTTY, 0644):
 * a FIFO without a reader fails (ENXIO) instead of blocking.  fd or
 * -errno. */
int fpool__nbfd_open_path(const char *path);

/* ---- sink.c: where the master writes records, never blocking ---------- */

/* The policy and how a sink avoids blocking are described in sink.c. */
struct fpool__sink;
/* A sink writing to `path` (opened for appending, non-blocking, created
 * 0644), or to `fd` (not closed by the sink) when path is NULL.  `what`
 * names it in messages ("the log file", "worker stdout file"; the path is
 * added).  0 and *out, or -errno. */
int fpool__sink_new(struct fpool__sink **out, const char *path, int fd,
		    const char *what);
/* Open the sink's path again (logrotate).  0 or -errno (the old file
 * stays in use); a no-op for an fd sink. */
int fpool__sink_reopen(struct fpool__sink *s);
/* From now on queue records and write them from `base` (the master's
 * loop).  0 or -ENOMEM. */
int fpool__sink_attach(struct fpool__sink *s, struct event_base *base);
/* The loop ended: write what is queued, each wait bounded by a second,
 * and write at once from now on.  NULL is a no-op. */
void fpool__sink_detach(struct fpool__sink *s);
/* In a new worker: drop the master's queue and events, write
 * synchronously from now on.  NULL is a no-op. */
void fpool__sink_forget(struct fpool__sink *s);
/* Queue one or more whole records (lines) moved out of `record`; they
 * are dropped, and counted, if the queue is full. */
void fpool__sink_add(struct fpool__sink *s, struct evbuffer *record);
/* The queue to format one record straight into, if `bound` more bytes
 * fit; else NULL, and the record is counted as dropped.  Call
 * fpool__sink_added() after. */
struct evbuffer *fpool__sink_room(struct fpool__sink *s, size_t bound);
void fpool__sink_added(struct fpool__sink *s);
/* Move what src has queued to the end of dst's queue. */
void fpool__sink_take(struct fpool__sink *dst, struct fpool__sink *src);
/* Write what is queued, as far as the sink takes it now.  NULL: no-op. */
void fpool__sink_flush(struct fpool__sink *s);
/* Bytes queued; records dropped and not yet reported. */
size_t fpool__sink_queued(const struct fpool__sink *s);
uint64_t fpool__sink_dropped(const struct fpool__sink *s);
void fpool__sink_free(struct fpool__sink *s);
/* Called with true when some sink falls behind (the master should stop
 * reading its workers' records and output for a while), false when none
 * does any more. */
typedef void (*fpool__pressure_cb)(bool congested, void *arg);
void fpool__sink_on_pressure(fpool__pressure_cb cb, void *arg);
/* Whether some sink is behind now. */
bool fpool__sink_pressure(void);
/* How a sink writes its own record (the count of what it dropped): the
 * log's formatter, which log.c sets (a sink knows nothing of formats). */
struct fpool__record;
typedef int (*fpool__sink_format_cb)(const struct fpool__record *r,
				     struct evbuffer *b);
/* And how it says, once, that it gives up on a reader (to the log). */
typedef void (*fpool__sink_notice_cb)(const char *msg);
void fpool__sink_set_format(fpool__sink_format_cb cb,
			    fpool__sink_notice_cb notice_cb);
/* The fd behind the sink was replaced (dup2): look at it again. */
void fpool__sink_refresh(struct fpool__sink *s);

/* ---- log.c ------------------------------------------------------------- */

struct evbuffer;

/* One log record, or one captured line of a worker's output. */
struct fpool__record {
	double time; /* Unix time */
	enum fpool_log_level level;
	int worker;	    /* slot id, or -1 for the master */
	pid_t pid;	    /* the worker's pid, or the master's */
	const char *stream; /* "stdout"/"stderr" for a captured line */
	const char *msg;    /* any bytes */
	size_t msglen;
	const struct fpool_log_field *fields;
	size_t nfields;
};

/* Parse "text" or "json".  0 or -EINVAL. */
int fpool__log_format_parse(const char *s, enum fpool_log_format *out);
/* Open a file for appending as sinks do (CLOEXEC, NONBLOCK, NOCTTY,
 * 0644).  The fd, or -errno. */
int fpool__open_append(const char *path);
/* Write all of data, waiting on EAGAIN.  0 or -errno. */
int fpool__write_all(int fd, const void *data, size_t len);
/* Format r as the sink does (text or JSON, one line with its newline). */
int fpool__record_format(const struct fpool__record *r, struct evbuffer *b);
/* The JSON form of r, whatever the sink's format.  0 or -errno. */
int fpool__record_json(const struct fpool__record *r, struct evbuffer *b);
/* Write r to a sink (NULL: the log), unless r is a record below the
 * level: at once (`now`), or batched until fpool__log_flush(). */
void fpool__log_record(struct fpool__sink *to, const struct fpool__record *r,
		       bool now);
/* Write the batched records. */
void fpool__log_flush(void);
/* The master's loop runs: from now on the log never blocks it (sink.c);
 * fpool__log_detach() when the loop is over. */
void fpool__log_attach(struct event_base *base);
void fpool__log_detach(void);
/* In a new worker: forget the master's queued records and loop. */
void fpool__log_child(void);
/* The master's stderr was replaced (--daemon): write to the new one. */
void fpool__log_refresh(void);
/* Append s to b for a text log or a terminal: control characters (tab
 * excepted), C1 controls and bytes that are not UTF-8 escaped as \n, \r,
 * \uNNNN and \xNN, so one record stays one harmless line. */
void fpool__text_escape(struct evbuffer *b, const char *s, size_t len);
/* In a new worker: send records to the master over `chan`. */
void fpool__log_set_worker(int chan, unsigned id);
/* Close the log file (back to stderr). */
void fpool__log_close(void);
/* Log with ": strerror(err)" appended; err is a positive errno. */
void fpool__log_errno(enum fpool_log_level level, int err, const char *fmt, ...)
	FPOOL_PRINTF(3, 4);
/* Route libevent's own warnings into our log. */
void fpool__log_libevent(void);

/* ---- parse.c: the one parser of numbers -------------------------------- */

/* Longest duration accepted, in seconds (one week). */
#define FPOOL_MAX_DURATION (7.0 * 24 * 3600)
/* Parse a duration: "1", "0.25", "250ms", "2s", "1.5m".  Must be > 0 and
 * <= FPOOL_MAX_DURATION.  0 or -EINVAL (-ERANGE when out of range). */
int fpool__parse_duration(const char *s, double *out);
/* Parse a decimal integer (digits only) in [min, max].  0, -EINVAL or
 * -ERANGE. */
int fpool__parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);
int fpool__parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Whether s is one or more decimal digits and nothing else. */
bool fpool__all_digits(const char *s);

/* ---- listen.c ---------------------------------------------------------- */

struct fpool__addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[128]; /* canonical form, for messages */
};
/* Parse "HOST:PORT" (HOST a numeric IPv4 address, "localhost", "*" or
 * empty for every address), "[V6ADDR]:PORT" or "unix:PATH".  No DNS.
 * 0 or -EINVAL; `why` (may be NULL) says what is wrong. */
int fpool__addr_parse(const char *s, struct fpool__addr *out, const char **why);
/* Create a listening socket (CLOEXEC, NONBLOCK) bound to `a`.
 * 0 and *fd, or -errno. */
int fpool__addr_listen(const struct fpool__addr *a, int backlog, int *fd);
/*
 * A TCP listening socket takes no new connection from now on, for every
 * process that holds it, while the connections already queued on it stay
 * there to be accepted: a socket filter that drops every packet, so new
 * SYNs go unanswered (the client tries again a second later, and is
 * refused once the socket is closed) instead of being queued where nobody
 * may accept them.  0 or -errno.
 */
int fpool__listen_refuse_new(int fd);
struct fpool__listener;
/* The pool stops: a TCP listener the master made takes no new connection
 * (fpool__listen_refuse_new), then every listener is closed. */
void fpool__listeners_stop(struct fpool__listener *v, size_t n);
/* Format a bound socket's local address into buf. */
void fpool__sockname(int fd, char *buf, size_t len);

/* ---- reuseport.c ------------------------------------------------------ */

/* A TCP socket (CLOEXEC, NONBLOCK) with SO_REUSEPORT bound to sa, and
 * listening when backlog > 0.  0 and *fd, or -errno. */
int fpool__reuseport_socket(const struct sockaddr *sa, socklen_t len,
			    int backlog, int *fd);

/* ---- backoff.c --------------------------------------------------------- */

/* Delay before the next start of a slot after `failed` consecutive failed
 * starts: 0 for failed <= 2, then 0.1 s * 2^(failed-3), capped at 10 s. */
double fpool__backoff_delay(unsigned failed);

/* ---- channel.c --------------------------------------------------------- */

/* Largest channel packet; bigger ones are refused. */
#define FPOOL_CHAN_MAX 65536

enum fpool__msg_type {
	FPOOL_MSG_READY,
	FPOOL_MSG_HEARTBEAT,
	FPOOL_MSG_LOG,
};
/* Log record times are Unix times below this (year 5138). */
#define FPOOL_LOG_TIME_MAX 1e11
/* Most key/value fields a log record carries over the channel. */
#define FPOOL_LOG_MAX_FIELDS 32
struct fpool__msg {
	enum fpool__msg_type type;
	uint64_t requests; /* heartbeat: requests served so far */
	/* log: a record.  Decoded strings are owned by the message and
	 * freed by fpool__msg_clear(); when encoding they are the
	 * caller's and must be valid UTF-8 without NUL. */
	enum fpool_log_level level;
	double time; /* Unix time the worker logged it */
	char *text;
	struct fpool_log_field *fields;
	size_t nfields;
};
/* Free what fpool__msg_decode() allocated in m. */
void fpool__msg_clear(struct fpool__msg *m);
/* Encode a message as one JSON object into buf.  0 and *len, or -errno. */
int fpool__msg_encode(const struct fpool__msg *m, char *buf, size_t cap,
		      size_t *len);
/* Decode one packet.  0, or -EINVAL for anything malformed (-ENOMEM).
 * Call fpool__msg_clear() on m after a successful decode. */
int fpool__msg_decode(const char *buf, size_t len, struct fpool__msg *m);
/* Send one message.  `block`: wait for room (else -EAGAIN when full). */
int fpool__msg_send(int fd, const struct fpool__msg *m, bool block);

/* ---- output.c: worker stdout/stderr, lines, ring ------------------------ */

/* Longest line kept whole; longer ones are cut into pieces this long. */
#define FPOOL_LINE_MAX 16384

struct fpool__linebuf {
	char *buf; /* FPOOL_LINE_MAX bytes once needed */
	size_t len;
	bool cut; /* the last piece was cut at FPOOL_LINE_MAX */
};
typedef void (*fpool__line_cb)(const char *line, size_t len, void *arg);
/* Split data into lines (without their newline) and call cb for each
 * complete one; keep the rest for the next call.  0 or -ENOMEM. */
int fpool__linebuf_feed(struct fpool__linebuf *lb, const char *data, size_t n,
			fpool__line_cb cb, void *arg);
/* Hand out the last partial line, if any. */
void fpool__linebuf_flush(struct fpool__linebuf *lb, fpool__line_cb cb,
			  void *arg);
void fpool__linebuf_free(struct fpool__linebuf *lb);

/* Bytes of output a slot keeps at most for `ctl output` (the last
 * lines); a longer line is kept cut to FPOOL_RING_LINE bytes. */
#define FPOOL_RING_BYTES (64 * 1024)
#define FPOOL_RING_LINE	 4096

/* One kept line: len bytes (any bytes), then a NUL. */
struct fpool__line {
	size_t len;
	char text[];
};
/* The last `cap` lines, oldest first, FPOOL_RING_BYTES at most. */
struct fpool__ring {
	struct fpool__line **lines; /* cap entries once a line came */
	size_t cap, head, n;
	size_t bytes; /* held by the lines, their NULs included */
};
/* An empty ring; nothing is allocated before the first line. */
void fpool__ring_init(struct fpool__ring *r, size_t cap);
/* Copy a line in (cut past FPOOL_RING_LINE, with a marker), dropping
 * the oldest lines while full.  0 or -ENOMEM. */
int fpool__ring_push(struct fpool__ring *r, const char *line, size_t len);
/* Line i (0 = oldest) and its length (len may be NULL), or NULL past
 * the end. */
const char *fpool__ring_get(const struct fpool__ring *r, size_t i, size_t *len);
void fpool__ring_free(struct fpool__ring *r);

struct fpool__proc;
/* The master's end of a worker's stdout or stderr. */
struct fpool__pipe {
	struct fpool__proc *proc;
	const char *stream; /* "stdout" or "stderr" */
	int fd;		    /* -1 when closed */
	struct event *ev;
	struct fpool__linebuf lb;
};
/* Make a pipe; *child_end gets the worker's (write) end.  0 or -errno. */
int fpool__pipe_open(struct fpool__pipe *p, struct fpool__proc *proc,
		     const char *stream, int *child_end);
/* Read it from the loop (now if `on`, else once fpool__pipe_reading()
 * says so).  0 or -ENOMEM. */
int fpool__pipe_watch(struct fpool__pipe *p, struct event_base *base, bool on);
/* The worker exited: read what it left in the pipe, flush, close.  A
 * process it started may still hold the pipe and write on: what comes
 * after the pipe's capacity is not waited for (the pipe is closed, and
 * the log says so). */
void fpool__pipe_drain(struct fpool__pipe *p);
/* Close without reading. */
void fpool__pipe_close(struct fpool__pipe *p);
/* Read it from the loop again, or stop (a sink is behind). */
void fpool__pipe_reading(struct fpool__pipe *p, bool on);

/* ---- proc.c and slot.c: worker processes and the slots that hold them -- */

/* What a process or a slot's timer tells the pool (pool->proc_event). */
enum fpool__proc_event {
	PEV_READY,     /* p said "ready" */
	PEV_HEARTBEAT, /* p sent a heartbeat (p->requests updated) */
	PEV_EXITED,    /* p's pidfd says it exited: reap */
	PEV_DEADLINE,  /* p's stop deadline passed */
	PEV_DUE,       /* the slot's backoff delay passed (p NULL) */
};

enum fpool__proc_state {
	PROC_STARTING, /* forked, "ready" not yet received */
	PROC_READY,    /* serving */
	PROC_STOPPING, /* told to stop (SIGTERM/SIGINT), waiting for exit */
};

/* Memory a slot shares with its worker process (MAP_SHARED): what the
 * worker is doing, readable by the master even when the worker hangs.
 * One entry per slot id in one mapping (activity.c); 128 bytes, so a
 * page holds whole entries. */
struct fpool__shared {
	char activity[128]; /* fpool_worker_set_activity(), NUL-terminated */
};

/* One worker process, as the master sees it. */
struct fpool__proc {
	struct fpool__slot *slot;
	enum fpool__proc_state state; /* written by slot.c only */
	pid_t pid;
	int pidfd;		     /* -1 when none (pidfd_open unsupported) */
	int chan;		     /* master end of the channel, or -1 */
	struct event *chan_ev;	     /* EV_READ on chan */
	struct event *pidfd_ev;	     /* EV_READ on pidfd: the process exited */
	struct event *timer;	     /* stop deadline */
	struct fpool__pipe pipes[2]; /* its stdout and stderr */
	double started;		     /* fpool__now() at fork */
	double ready_at;	     /* at "ready", 0 before */
	double last_seen;	     /* last message from the worker */
	double stop_sent;	     /* when SIGTERM/SIGINT was first sent */
	bool killed;		     /* SIGKILL already sent */
	uint64_t requests;	     /* last reported by the worker */
	uint64_t max_requests;	     /* recycle past this many; 0: never */
	double retire_at; /* recycle once fpool__now() passes it; 0: never */
	double recycle_after; /* no new recycle try before this */
	bool held; /* held_msg: a log record a sink is not ready for */
	struct fpool__msg held_msg;
	bool inherited;	     /* forked by the image before a binary upgrade */
	unsigned generation; /* the pool's when it was forked */
	/* -k exec: chan is the master's NOTIFY_SOCKET end (notify) or -1;
	 * exec_err the read end of the child's close-on-exec error pipe
	 * until EOF (execve succeeded) or -1. */
	bool notify;
	int exec_err;
	struct event *exec_ev;
	char exec_why[200]; /* what the child wrote there */
	size_t exec_whylen;
};

/* A slot's state (slot.c, settle()): what its processes are doing. */
enum fpool__slot_state {
	SLOT_IDLE,	/* no process, none due */
	SLOT_BACKOFF,	/* no process; the next start is due at `due` */
	SLOT_STARTING,	/* its worker was forked, not ready yet */
	SLOT_READY,	/* its worker serves, alone */
	SLOT_REPLACING, /* a replacement starts (reload, recycle) */
	SLOT_DRAINING,	/* the replaced worker drains beside the new one */
	SLOT_STOPPING,	/* its worker was told to stop, or is gone and
			   processes on their way out remain */
	SLOT_NSTATES
};

/* What can happen to a slot (fpool__slot_dispatch()). */
enum fpool__slot_event {
	SEV_START,	  /* the pool starts: a worker is wanted here */
	SEV_ADD,	  /* the slot is wanted again (add, TTIN, scale) */
	SEV_DUE,	  /* the backoff delay passed */
	SEV_REPLACE,	  /* start a replacement (facts.recycle: a recycle) */
	SEV_SPAWNED,	  /* the fork decided worked: p is the process */
	SEV_SPAWN_FAILED, /* it failed */
	SEV_READY,	  /* p said "ready" */
	SEV_EXIT,	  /* p exited */
	SEV_STOP,	  /* stop every process (facts: graceful, unwant) */
	SEV_KILL,	  /* stop the worker (facts.graceful); it is replaced */
	SEV_OVERRUN,	  /* p hung, or overran its stop deadline: SIGKILL */
	SEV_NEVENTS
};

enum fpool__role { ROLE_CUR, ROLE_NEXT };

/* What a dispatch decided; supervise.c carries it out, in this order. */
#define FPOOL_ACT_SIGNAL	 (1u << 0) /* sig[]: signal processes */
#define FPOOL_ACT_FREE		 (1u << 1) /* free `gone` (it exited) */
#define FPOOL_ACT_UNBACKOFF	 (1u << 2) /* disarm the backoff timer */
#define FPOOL_ACT_READY		 (1u << 3) /* a worker became ready */
#define FPOOL_ACT_FAILED_START	 (1u << 4) /* count it (--max-restarts) */
#define FPOOL_ACT_TOOK_OVER	 (1u << 5) /* a replacement took over */
#define FPOOL_ACT_REPLACE_FAILED (1u << 6) /* it failed to start or died */
#define FPOOL_ACT_SPAWN		 (1u << 7) /* fork into `role` */
#define FPOOL_ACT_BACKOFF	 (1u << 8) /* arm the timer: `delay`, `why` */
#define FPOOL_ACT_GONE		 (1u << 9) /* a process left the slot */
struct fpool__decision {
	unsigned act;
	enum fpool__role role;
	struct {
		struct fpool__proc *p;
		int sig;
		bool deadline; /* first stop: arm the graceful deadline */
	} sig[3];
	unsigned nsig;
	struct fpool__proc *gone;
	double delay;
	char why[96];
};

/* What the table needs to know besides the slot itself. */
struct fpool__slot_facts {
	double now;
	double min_uptime;
	bool running;  /* the pool runs (is not stopping) */
	bool graceful; /* SEV_STOP, SEV_KILL: SIGTERM, else SIGINT */
	bool unwant;   /* SEV_STOP: the slot is no longer wanted */
	bool recycle;  /* SEV_REPLACE: a recycle, not a reload */
};

/* A recycle that failed is tried again this much later (s). */
#define FPOOL_RECYCLE_RETRY 10.0

/* A logical worker id and the processes in it (see slot.c). */
struct fpool__slot {
	struct fpool_pool *pool;
	unsigned id;
	enum fpool__slot_state state; /* written by slot.c's settle() only */
	bool wanted;		      /* keep a worker in this slot */
	struct fpool__proc *cur;      /* its worker, or NULL */
	struct fpool__proc *next;     /* a replacement, until it is ready */
	struct fpool__proc *old;      /* the replaced worker, draining */
	bool backoff;		      /* waiting before the next start */
	double due;		      /* backoff: when the next start is due */
	enum fpool__role spawning;    /* the role of the fork decided */
	bool recycling;		      /* the replacement is a recycle's */
	unsigned failed;	      /* consecutive failed starts */
	unsigned restarts;	      /* processes started in this slot */
	struct event *timer;	      /* the backoff delay */
	char last_exit[96];	      /* how the last process ended, or "" */
	struct fpool__shared *shm;    /* its activity entry, or NULL */
	struct fpool__ring ring;      /* the last lines its workers printed */
};

/* slot.c: the state table.  Apply event `ev` (about process p, where it
 * concerns one) to slot s: the slot and its processes' states change,
 * and *d says what the caller must do.  Makes no system call. */
void fpool__slot_dispatch(struct fpool__slot *s, enum fpool__slot_event ev,
			  struct fpool__proc *p,
			  const struct fpool__slot_facts *f,
			  struct fpool__decision *d);
/* Whether the table has an entry for `ev` in `state` (for the tests that
 * reach every entry). */
bool fpool__slot_handles(enum fpool__slot_state state,
			 enum fpool__slot_event ev);
/* "idle", "backoff", "starting", "ready", "replacing", "draining",
 * "stopping". */
const char *fpool__slot_state_name(enum fpool__slot_state state);
/* A slot rebuilt from a binary upgrade's state (adopt.c): derive its
 * state from the processes it holds, as a dispatch would. */
void fpool__slot_adopted(struct fpool__slot *s);
/* Live processes in the slot (0..3); the one with this pid, or NULL. */
unsigned fpool__slot_live(const struct fpool__slot *s);
struct fpool__proc *fpool__slot_find(struct fpool__slot *s, pid_t pid);

/* proc.c: what a worker process needs from the system. */
/* A new slot (no process) and its timer on the pool's loop; NULL when out
 * of memory. */
struct fpool__slot *fpool__slot_new(struct fpool_pool *pool, unsigned id);
/* Free the slot and its process records, touching no process. */
void fpool__slot_free(struct fpool__slot *s);
/* Fork a worker for slot s (its pipes, channel, pidfd, events). The new
 * process, or NULL (logged). */
struct fpool__proc *fpool__proc_spawn(struct fpool__slot *s);
/* Free a process record, touching no process. */
void fpool__proc_free(struct fpool__proc *p);
/* A process handed over by the image before a binary upgrade, its pid,
 * fds and counters filled in by adopt.c: its events on the pool's loop
 * (channel, pidfd, output pipes; what cannot be watched is logged), and
 * a stop deadline `deadline` s from now if it is stopping. */
void fpool__proc_adopt(struct fpool__proc *p, double deadline);
/* A new process record for slot s with no process and no fd (-1), for
 * fpool__proc_adopt().  NULL when out of memory. */
struct fpool__proc *fpool__proc_blank(struct fpool__slot *s);
/* Send a signal (through the pidfd when there is one).  0 or -errno. */
int fpool__proc_signal(struct fpool__proc *p, int sig);
/* Arm p's stop deadline (graceful_timeout) and note when it began. */
void fpool__proc_arm_deadline(struct fpool__proc *p);
/* Read what the exited p left in its channel and pipes. */
void fpool__proc_drain(struct fpool__proc *p);
/* Read what waits on p's channel now (before judging its heartbeat). */
void fpool__proc_poll(struct fpool__proc *p);
/* Arm the slot's backoff timer. */
void fpool__slot_arm_backoff(struct fpool__slot *s, double delay);
/* Give the slot's processes `seconds` more before their heartbeats are
 * judged (time the master did not read them), never past `now`. */
void fpool__slot_credit(struct fpool__slot *s, double seconds, double now);
/* Read the slot's channels and output pipes, or stop reading them. */
void fpool__slot_reading(struct fpool__slot *s, bool on);
/* Why the process should be recycled now (a phrase for the log), or
 * NULL. */
const char *fpool__proc_recycle_reason(struct fpool__proc *p, double now,
				       char *buf, size_t len);
/* The worker's activity from shared memory, sanitised, or "". */
void fpool__slot_activity(const struct fpool__slot *s, char *buf, size_t len);

/* ---- control.c: the control socket ------------------------------------ */

/* Longest request line: room for a `send` of FPOOL_MESSAGE_MAX bytes of
 * text with some escapes. */
#define FPOOL_CONTROL_MAX (160 * 1024)
/* Control clients connected at once; more are refused. */
#define FPOOL_CONTROL_CLIENTS 64
struct fpool__control;
/* Listen on a unix socket at path (mode 0600).  0 or -errno. */
int fpool__control_open(struct fpool_pool *pool, const char *path);
/* Close it and its clients; the master (`owner`) removes the file. */
void fpool__control_close(struct fpool_pool *pool, bool owner);
/* A binary upgrade (upgrade.c).  The listening socket, and the client
 * waiting for the answer to its `upgrade`, or -1: what the state hands
 * over.  Every other client gets what its replies hold, now. */
int fpool__control_fd(const struct fpool_pool *pool);
int fpool__control_waiter_fd(const struct fpool_pool *pool);
void fpool__control_flush_clients(struct fpool_pool *pool);
/* The new image: serve the control socket listening on fd (handed
 * over) at path, and take the waiting client's fd (or -1) as a client.
 * 0 or -errno (then neither fd is closed). */
int fpool__control_adopt(struct fpool_pool *pool, const char *path, int fd,
			 int waiter_fd);
/* Answer the client waiting for its `upgrade` (none: a no-op), with
 * `error` or else the JSON `result`, under request id `id`; then read
 * its requests again. */
void fpool__control_answer(struct fpool_pool *pool, const char *id,
			   const char *error, const char *result);
/* Answer one request line: the reply line goes to out.  *stop is set when
 * it asks the pool to stop (the caller stops it after sending). */
struct evbuffer;
void fpool__control_handle(struct fpool_pool *pool, const char *line,
			   size_t len, struct evbuffer *out, bool *stop,
			   bool *graceful);
/* "TERM", "SIGTERM", "KILL"... to a signal number, or -EINVAL. */
int fpool__signal_parse(const char *name);

/* What the pool's workers are doing, for STATUS= (supervise.c counts). */
struct fpool__counts {
	unsigned target;   /* slots wanted */
	unsigned ready;	   /* of them, with a ready worker */
	unsigned starting; /* with a worker not ready yet */
	unsigned backoff;  /* waiting to start one */
	bool reloading, stopping;
};
/* What a worker switches to (account.c). */
struct fpool__account {
	uid_t uid;     /* (uid_t)-1: keep */
	gid_t gid;     /* (gid_t)-1: keep */
	gid_t *groups; /* the supplementary groups */
	size_t ngroups;
};

/* ---- worker.c: the child side ------------------------------------------ */

/*
 * All a new worker process is told: the child side (worker.c) sees
 * nothing of the master but this.  The pool fills in what every worker
 * shares (pool->spawn, at run), proc.c the rest right before fork().
 * Pointers are into the master's memory, which the child has a copy of.
 */
struct fpool__spawn {
	const struct fpool_worker_def *def; /* or NULL, and: */
	const char *module; /* the worker module to load after fork */
	int argc;
	char **argv;
	pid_t master_pid;
	unsigned id;
	int chan, out, err;   /* the worker's ends of its channel and pipes */
	const int *listeners; /* the pool's listening sockets */
	size_t nlisteners;
	bool reuse_port; /* a reserved socket becomes a listener of its own */
	const int *preserved; /* fpool_preserve_fd() */
	size_t npreserved;
	uid_t uid; /* drop to these; (uid_t)-1: keep */
	gid_t gid;
	const gid_t *groups; /* the supplementary groups with gid */
	size_t ngroups;
	const char *user; /* for messages */
	double graceful_timeout;
	double heartbeat_interval;
	uint64_t max_requests;		/* it tells the master past this */
	struct fpool__shared *activity; /* its entry, or NULL */
	void *shm;			/* the mapping holding it */
	size_t shm_len;
	sigset_t mask; /* to restore once its own loop is built */
	/* Events of the master's loop to free: signal and timer events,
	 * which touch no epoll instance (see pool.c's forget list). */
	struct event *const *forget;
	size_t nforget;
	const void *keep; /* the master's state, left alone, kept reachable */
	/* -k exec (exec.c): the program, notify or not, and per process
	 * the write end of its close-on-exec error pipe, its
	 * NOTIFY_SOCKET address (or NULL) and its listeners' names. */
	const char *exec_program;
	bool exec_notify;
	double worker_timeout;
	int exec_err;
	const char *notify_addr;
	const char *listen_names; /* LISTEN_FDNAMES, ':'-separated */
};
/* Run a worker in a freshly forked child.  Never returns. */
void fpool__worker_run(const struct fpool__spawn *sp) __attribute__((noreturn));
/* Flush stdio and leave the process: the only exit of a child. */
void fpool__child_exit(int status) __attribute__((noreturn));

/* ---- exec.c: the child side of -k exec -------------------------------- */

/* Exec the program in a freshly forked child, as systemd would start a
 * socket-activated service.  Never returns: a failure is written to
 * sp->exec_err and the child exits FPOOL_EXIT_START_FAILED. */
void fpool__exec_run(const struct fpool__spawn *sp) __attribute__((noreturn));
/* The program as execvp() would find it: 0 and its path in buf, or
 * -errno (ENOENT: nowhere in PATH; EACCES: not executable). */
int fpool__exec_resolve(const char *prog, char *buf, size_t len);

/* ---- notifysock.c: the master's end of an exec'd worker's NOTIFY_SOCKET */

/* A datagram socket of the master's for process p, bound to an abstract
 * address of its own (written to addr, "@..."): whatever arrives there
 * is about p.  The fd (CLOEXEC, NONBLOCK, SO_PASSCRED) or -errno. */
int fpool__notify_open(struct fpool__proc *p, char *addr, size_t len);
/* Read what waits on p's notify socket (up to a batch) and tell the pool
 * (READY=1, WATCHDOG=1, STATUS=, STOPPING=1).  `all`: read it all. */
void fpool__notify_read(struct fpool__proc *p, bool all);

/* ---- child.c: becoming a worker (from the spawn context only) ---------- */

/* Log why the start failed and exit FPOOL_EXIT_START_FAILED. */
void fpool__child_fail(const char *what) __attribute__((noreturn));
/* stdin to /dev/null; a process group of its own; no controlling tty. */
void fpool__child_leave_terminal(void);
/* Let go of the master's state (see child.c), reset signals, die with
 * the master, close every fd but stdio, the channel, the listeners
 * (returned, malloc'd, *n of them: its own with --reuse-port) and the
 * preserved ones. */
int *fpool__child_forget(const struct fpool__spawn *sp, size_t *n);
/* Keep the page holding its activity entry, unmap the rest; that page
 * (to unmap at the end) or NULL. */
void *fpool__child_keep_activity(const struct fpool__spawn *sp);
/* Close every fd but those in keep[] (n of them; sorted in place). */
void fpool__close_other_fds(int *keep, size_t n);
/* The listener a worker serves for the master's socket fd: that very
 * socket, or with --reuse-port one of its own on the same address. */
int fpool__child_listener(const struct fpool__spawn *sp, int fd);
/* PR_SET_PDEATHSIG, then check the master is still the parent. */
void fpool__child_die_with_master(pid_t master_pid);
/* Become --user/--group with exactly the groups resolved (exits if it
 * cannot, or could get back). */
void fpool__child_drop(const struct fpool__spawn *sp);

/* ---- pool.c: the master ------------------------------------------------ */

enum fpool__pool_state {
	POOL_NEW,
	POOL_RUNNING,
	POOL_STOPPING,
	POOL_DONE,
};

struct fpool__listener {
	int fd;
	struct fpool__addr addr;
	char *unlink_path; /* unix socket file to remove at exit, or NULL */
	bool tcp_owned;	   /* a TCP listener we made (not passed in) */
	bool passed_in;	   /* fpool_pool_listen_fd(): socket activation */
};

struct fpool_pool {
	struct fpool_config cfg;
	enum fpool__pool_state state;
	pid_t master_pid;
	struct event_base *base;
	struct fpool__slot **slots; /* indexed by id; NULL = never used */
	unsigned nslots;	    /* length of slots */
	struct fpool__shared *shm;  /* an entry per possible slot id, or NULL */
	size_t shm_len;		    /* bytes mapped at shm */
	int shm_fd;		    /* the memfd behind shm, or -1 */
	struct fpool__upgrade *upgrade; /* binary upgrade (upgrade.c) */
	/* waitpid(-1): PID 1, a subreaper or cfg.reap_all (supervise.c,
	 * fpool__pool_reap_mode()); else only the pool's own children. */
	bool reap_all;
	unsigned target; /* how many slots are wanted */
	struct fpool__listener *listeners;
	size_t nlisteners;
	int *preserved;
	size_t npreserved;
	struct fpool__hooks on_start, on_shutdown;
	struct fpool__sink
		*out[2]; /* --stdout, --stderr files; NULL: the log */
	struct fpool__control *control; /* --control socket, or NULL */
	double started;			/* fpool__now() when run began */
	bool reloading;			/* a rolling reload is under way */
	unsigned reload_next;		/* the next slot id it looks at */
	int reload_slot;		/* the slot being replaced now, or -1 */
	double reload_asked;		/* when the reload was asked */
	double *failures;   /* --max-restarts: times of failed starts (ring) */
	unsigned nfailures; /* entries used in failures */
	unsigned failures_at;	       /* next entry to overwrite */
	struct fpool__account account; /* --user, --group, resolved */
	int pidfile_fd;		       /* --pidfile, held locked; -1: none */
	bool notified_ready;	       /* READY=1 sent to systemd */
	unsigned long notify_dropped;  /* notify datagrams from strangers */
	struct event *sigev[16];
	size_t nsigev;
	struct {
		int sig;
		struct sigaction old;
	} ignored[64]; /* signals ignored while running, to restore */
	size_t nignored;
	struct event *check_ev;
	/* What its processes do, told to supervise.c (proc.c calls it). */
	void (*proc_event)(struct fpool_pool *pool, struct fpool__slot *s,
			   struct fpool__proc *p, enum fpool__proc_event ev);
	struct fpool__spawn spawn; /* what every new worker is told */
	rlim_t nofile;		   /* RLIMIT_NOFILE once running, else 0 */
	double check_last;	   /* when the check timer last ran */
	bool reading_paused;	   /* a sink is behind: workers not read */
	double paused_at;	   /* since when */
	bool graceful;		   /* how the current stop was asked */
	int result;		   /* what fpool_pool_run returns */
	/* cfg.worker_module resolved for the current generation (each
	 * reload resolves and checks it again), or NULL. */
	char *module;
	char refused[512]; /* why the last reload was refused, or "" */
	/* Called first by fpool_pool_reload() (the CLI re-reads its config
	 * file there); non-zero refuses the reload, with pool->refused. */
	int (*reconfigure)(struct fpool_pool *pool, void *arg);
	void *reconfigure_arg;
	/* fpool_pool_on_message(), fpool_pool_on_worker() (events.c). */
	fpool_pool_message_cb message_cb;
	void *message_arg;
	fpool_pool_worker_cb worker_cb;
	void *worker_arg;
	unsigned generation; /* reloads begun; a new process gets it */
	bool events_asked;   /* an `events` request was just answered */
};

/* Add a bound socket to the listeners (owned_path: a unix socket file
 * removed at exit).  0 or -ENOMEM. */
int fpool__pool_add_listener(struct fpool_pool *pool, int fd,
			     const struct fpool__addr *a, bool owned_path);

/* Open files the master needs per worker process: its channel, pidfd
 * and two output pipes. */
#define FPOOL_FDS_PER_PROC 4
/* And for itself: stdio, log files, the loop's, signals, pidfile... */
#define FPOOL_FDS_RESERVE 32
/* A check timer this late (s) means the master was stopped or frozen. */
#define FPOOL_CHECK_LATE 1.0

/* ---- limits.c: the open file limit ------------------------------------ */

/* Raise the soft RLIMIT_NOFILE to the hard one and check the pool fits
 * (at run).  0, or -EMFILE (logged). */
int fpool__pool_fd_limit(struct fpool_pool *pool, unsigned workers);
/* Whether a pool of `workers` fits the master's open file limit;
 * *need gets the count it needs (see limits.c). */
int fpool__pool_fds_fit(const struct fpool_pool *pool, unsigned workers,
			unsigned long *need);

/* ---- supervise.c: the pool's policy, acting on the slots' table ------- */

/* What the table is told of the pool now. */
struct fpool__slot_facts fpool__pool_facts(const struct fpool_pool *pool);
/* Dispatch an event to slot s (slot.c) and carry out the decision.  What
 * was decided (FPOOL_ACT_*). */
unsigned fpool__slot_event(struct fpool__slot *s, enum fpool__slot_event ev,
			   struct fpool__proc *p,
			   const struct fpool__slot_facts *f);

/* Install the pool's process-event handler (at creation). */
void fpool__supervise_init(struct fpool_pool *pool);
/* Decide, once the process is what it will stay (after daemonizing),
 * whether the pool reaps every child or only its own. */
void fpool__pool_reap_mode(struct fpool_pool *pool);
/* Reap the exited children of the pool (every exited child with
 * pool->reap_all) and act on our slots' exits. */
void fpool__pool_reap(struct fpool_pool *pool);
/* The same on SIGCHLD, leaving the processes whose pidfd is watched to
 * it (fpool__pool_reap_proc). */
void fpool__pool_reap_sigchld(struct fpool_pool *pool);
/* Reap p alone: its pidfd said it exited. */
void fpool__pool_reap_proc(struct fpool_pool *pool, struct fpool__proc *p);
/* The periodic check: a late timer (stopped master), hung workers,
 * overdue stops and backoffs, recycling. */
void fpool__pool_check(struct fpool_pool *pool);
/* A sink fell behind or caught up (sink.c's pressure callback). */
void fpool__pool_pressure(bool congested, void *arg);
/* A worker said "ready": systemd's READY=1 or STATUS=. */
void fpool__pool_worker_ready(struct fpool_pool *pool);
/* A process left a slot: end a stopping pool's loop, go on reloading. */
void fpool__pool_slot_idle(struct fpool_pool *pool);
/* A replacement failed to start or died before ready. */
void fpool__pool_replace_failed(struct fpool_pool *pool, struct fpool__slot *s);
/* A worker failed to start: count it for --max-restarts. */
void fpool__pool_failed_start(struct fpool_pool *pool);
/* Start recycling one worker that is due, if none is being replaced. */
void fpool__pool_recycle(struct fpool_pool *pool);
/* A new generation of the worker module at `module` (cfg.worker_module):
 * resolve its path and check it loads (module.c); pool->module becomes
 * the resolved path.  0, or -errno with the reason in pool->refused
 * (pool->module unchanged).  fpool_pool_run() makes the first unless the
 * program did. */
int fpool__pool_module_generation(struct fpool_pool *pool, const char *module);
/* Take cfg.pidfile (if any), held locked.  0, or -errno, logged (pool.c). */
int fpool__pool_take_pidfile(struct fpool_pool *pool);
/* What every new worker is told, from the pool's config (pool.c). */
void fpool__pool_spawn_base(struct fpool_pool *pool);
/* (Re)arm the check timer every cfg.check_interval.  0 or -ENOMEM. */
int fpool__pool_check_timer(struct fpool_pool *pool);

/* Close listener i (and remove its unix socket file): new workers no
 * longer get it; those that hold it keep it until they exit (pool.c). */
void fpool__pool_unlisten(struct fpool_pool *pool, size_t i);

/* ---- message.c, events.c: messages, worker events, `ctl events` -------- */

/* The first byte of a channel packet that is a message; the rest of the
 * packet is the message.  Every other packet is a JSON object ('{'). */
#define FPOOL_CHAN_MESSAGE 'm'
/* Send one message packet on a channel, never waiting: 0, -EMSGSIZE,
 * -EAGAIN (full) or -errno (-EPIPE: the other end is gone). */
int fpool__message_send(int fd, const void *data, size_t len);
/* A worker's message reached the master: the pool's callback (or the
 * log), and `ctl events`. */
void fpool__message_received(struct fpool_pool *pool, unsigned id,
			     const void *data, size_t len);
/* A worker started, became ready or exited: the pool's callback and
 * `ctl events`. */
void fpool__event_worker(struct fpool_pool *pool,
			 enum fpool_worker_event_type type, unsigned id,
			 pid_t pid, int status);
/* `ctl events` lines of the pool's own: a reload or an upgrade begins
 * or ends (what: "reload", "upgrade"; phase: "begin", "end", "failed";
 * detail or NULL), the pool is scaled, a slot waits before its next
 * start. */
void fpool__event_phase(struct fpool_pool *pool, const char *what,
			const char *phase, const char *detail);
void fpool__event_scale(struct fpool_pool *pool, unsigned from, unsigned to);
void fpool__event_backoff(struct fpool_pool *pool, unsigned id, double delay,
			  const char *why);
/* A worker's message, for `ctl events` (text, or its bytes in hex). */
void fpool__events_message(struct fpool_pool *pool, unsigned id,
			   const void *data, size_t len);
/* control.c: whether a client watches `ctl events`; hand a line (no
 * newline) to each, dropping one whose unread lines pass the bound. */
bool fpool__control_watched(const struct fpool_pool *pool);
void fpool__control_broadcast(struct fpool_pool *pool, const char *line,
			      size_t len);

/* ---- config.c: the config's ABI ------------------------------------- */

/* A caller's config into a whole struct of ours: the defaults for what
 * its struct_size does not reach.  0; -EINVAL if it was never initialised
 * (struct_size 0); -E2BIG if it is longer than ours and a byte we do not
 * know is set.  Every library function taking a config goes through it. */
int fpool__config_copy(struct fpool_config *dst,
		       const struct fpool_config *src);
/* Whether a whole config can run a pool: 1 to FPOOL_MAX_WORKERS workers,
 * exactly one kind of worker (a definition with a main, a module or a
 * program), timeouts and intervals above 0 (NaN is not). */
bool fpool__config_valid(const struct fpool_config *cfg);

/* ---- reconfig.c: a new config for a running pool ---------------------- */

/* Checked before anything changes: the new module (a new generation, as
 * at reload), the output files, the open file limit.  Then applied: the
 * worker and its arguments, timeouts, recycling and restart limits, the
 * output files, the pool size.  What only a new master can change
 * (user, group, daemon, pidfile, control socket, reuse-port) is logged
 * as such and left.  Called before a reload (the CLI's --config);
 * strings must live until the next call.  0, or -errno with the reason
 * in pool->refused and nothing changed. */
int fpool__pool_reconfigure(struct fpool_pool *pool,
			    const struct fpool_config *cfg);
/* Number of live processes. */
unsigned fpool__pool_live(const struct fpool_pool *pool);
/* What the workers are doing, for STATUS= and `status`. */
void fpool__pool_counts(const struct fpool_pool *pool, struct fpool__counts *c);
/* ---- requests.c: the operator's requests, what status shows ---------- */

/* Make slots 0..n-1, wanted (at creation).  0 or -ENOMEM. */
int fpool__pool_make_slots(struct fpool_pool *pool, unsigned n);
/* Start the wanted slots (the pool runs). */
void fpool__pool_start_slots(struct fpool_pool *pool);
/* Run exactly n workers (slots 0..n-1).  0 or -errno. */
int fpool__pool_scale(struct fpool_pool *pool, unsigned n);
/* One worker more (the lowest id not wanted) / fewer (the highest).
 * *id is the slot; 0 or -errno. */
int fpool__pool_grow_one(struct fpool_pool *pool, unsigned *id);
int fpool__pool_shrink_one(struct fpool_pool *pool, unsigned *id);
/* Send sig to slot id's worker (TERM/INT: a stop, with its deadline; it
 * is then replaced); *pid gets its pid.  0, -ENOENT or -errno. */
int fpool__pool_kill(struct fpool_pool *pool, unsigned id, int sig, pid_t *pid);

/* One process of the pool (or a slot in backoff, pid 0), as `status`
 * shows it. */
/* Respawns over all slots. */
unsigned fpool__pool_restarts(const struct fpool_pool *pool);
/* The last lines slot id's workers printed, or NULL (no such slot). */
const struct fpool__ring *fpool__pool_output(const struct fpool_pool *pool,
					     unsigned id);

/* ---- signals.c: the master's signal table ------------------------------ */

/* Handle or ignore every signal of the table (and the real-time ones). */
int fpool__signals_install(struct fpool_pool *pool);
/* Free the signal events and put back the program's dispositions. */
void fpool__signals_remove(struct fpool_pool *pool);

/* ---- upgrade.c, adopt.c: the binary upgrade in place (SIGUSR2) ------- */

/* The variable naming the state's memfd in the new image. */
#define FPOOL_UPGRADE_ENV "FORKPOOL_UPGRADE_FD"
/* The state's format (its "forkpool-state"); a state of another version
 * is read as the fallback: its core only (DESIGN.md). */
#define FPOOL_STATE_VERSION 1
/* Seconds the new binary's `--check` may take. */
#define FPOOL_UPGRADE_CHECK_TIMEOUT 30.0

struct fpool__upgrade;
/* What the master re-executes: the binary's absolute path resolved at
 * start, the original argv, the directory it started in (NULL: the
 * current one).  Without it an upgrade is refused.  0 or -ENOMEM. */
int fpool__upgrade_set_exec(struct fpool_pool *pool, const char *path, int argc,
			    char *const *argv, const char *cwd);
/* Start an upgrade, from SIGUSR2 (ctl_id NULL) or a control request with
 * that id.  NULL: under way, the control client is answered when it is
 * done (fpool__control_answer); else why not (logged). */
const char *fpool__upgrade_start(struct fpool_pool *pool, const char *ctl_id);
/* "checking" (the new binary's --check runs), "replacing" (the new
 * image replaces the workers it inherited), or NULL. */
const char *fpool__upgrade_phase(const struct fpool_pool *pool);
bool fpool__upgrade_busy(const struct fpool_pool *pool);
/* A reload asked while the check runs waits for the upgrade: true if
 * so (the reload runs once the upgrade failed; a new image reloads
 * anyway). */
bool fpool__upgrade_defer_reload(struct fpool_pool *pool);
/* A child that is no worker was reaped: true if it was the check (or a
 * process of the previous image, after a fallback). */
bool fpool__upgrade_reaped(struct fpool_pool *pool, pid_t pid, int status);
/* Reap what exited of the upgrade's own children (the --check of the new
 * binary, the previous image's processes after a fallback). */
void fpool__upgrade_reap(struct fpool_pool *pool);
/* The rolling reload ended (complete, or aborted). */
void fpool__upgrade_reload_done(struct fpool_pool *pool, bool complete);
/* Every wanted slot has a ready worker (after a fallback: stop the
 * previous image's processes). */
void fpool__upgrade_pool_ready(struct fpool_pool *pool);
void fpool__upgrade_free(struct fpool__upgrade *u);

/* The new image: the state handed over. */
struct fpool__state;
/* If FPOOL_UPGRADE_ENV names a state, read it (the variable is unset;
 * every fd it hands over is made close-on-exec): 0 and *out.  0 and
 * *out NULL when there is none (a stray variable is logged and
 * ignored); -EINVAL (logged) if it cannot be read at all. */
int fpool__state_load(struct fpool__state **out);
/* Close what nobody took and free it.  NULL is a no-op. */
void fpool__state_free(struct fpool__state *st);
/* The listeners handed over, and the fd of listener i, or -1 once taken. */
size_t fpool__state_nlisteners(const struct fpool__state *st);
int fpool__state_listener(const struct fpool__state *st, size_t i);
/* Listener i serves a --bind: the pool takes it as the previous image
 * had it.  0 or -errno. */
int fpool__state_take_listener(struct fpool_pool *pool, struct fpool__state *st,
			       size_t i);
/* The pool adopts the rest when it runs (it owns st from now on): the
 * listeners not taken are closed. */
void fpool__pool_adopt(struct fpool_pool *pool, struct fpool__state *st);
/* For fpool_pool_run(): whether it adopts; in its place of daemonizing
 * and taking the pidfile, of opening the control socket, and of starting
 * the workers.  The first two: 0 or -errno (logged). */
bool fpool__upgrade_adopting(const struct fpool_pool *pool);
int fpool__upgrade_adopt_detach(struct fpool_pool *pool);
int fpool__upgrade_adopt_control(struct fpool_pool *pool);
void fpool__upgrade_adopt_workers(struct fpool_pool *pool);

/* What upgrade.c (the running image) and adopt.c (the new one) share. */
/* Bytes of the check's output kept for the log and the answer. */
#define FPOOL_UPGRADE_CHECK_OUT 2048
/* Nesting of the state (objects in arrays in objects...). */
#define FPOOL_STATE_DEPTH 16
/* Largest state read (4096 slots of three processes fit well within). */
#define FPOOL_STATE_MAX (64 * 1024 * 1024)

enum fpool__upgrade_phase {
	UP_IDLE,
	UP_CHECKING,  /* the pre-flight check runs */
	UP_REPLACING, /* the new image replaces the inherited workers */
};

struct fpool__upgrade {
	/* What is executed (fpool__upgrade_set_exec), or NULL. */
	char *exe;
	char **argv; /* NULL-terminated; argv[0] is exe */
	char *cwd;
	enum fpool__upgrade_phase phase;
	bool ctl;	     /* a control client waits for the answer */
	char ctl_id[65];     /* its request's id */
	bool reload_pending; /* a reload was asked during the check */
	double began;
	/* The pre-flight check. */
	pid_t check_pid; /* 0: none running */
	int check_fd;	 /* its stdout and stderr, or -1 */
	struct event *check_ev, *check_timer;
	char check_out[FPOOL_UPGRADE_CHECK_OUT];
	size_t check_len;
	bool check_cut, check_timed_out;
	/* The new image: the state handed over, until adopted. */
	struct fpool__state *st;
	/* The fallback: processes of the previous image, stopped once the
	 * fresh pool is ready, and until then the state, whose fds (their
	 * channels, pipes) stay open so that they do not stop before. */
	pid_t *old_pids;
	size_t nold;
	struct fpool__state *old_st;
};

/* A listener handed over. */
struct fpool__st_listener {
	int fd;
	char *unlink_path; /* the unix socket file it removes at exit */
	bool tcp_owned;
	bool taken; /* serves a --bind of the new image */
};

/* A state as the new image read it. */
struct fpool__state {
	yajl_val tree;
	bool fallback; /* not this version's: keep the core only */
	char why[256]; /* why the fallback */
	int *fds;      /* every fd handed over ("fds") */
	bool *used;    /* fds[i] was adopted */
	size_t nfds;
	struct fpool__st_listener *listeners;
	size_t nlisteners;
	pid_t *pids; /* the workers of the previous image */
	size_t npids;
	int pidfile_fd;
	const char *pidfile_path;
	int control_fd, client_fd;
	const char *control_path;
	char ctl_id[65];
	sigset_t mask; /* the mask before the hand-over */
	const char *version, *exe;
};

/* pool->upgrade, made on first use; NULL when out of memory. */
struct fpool__upgrade *fpool__upgrade_get(struct fpool_pool *pool);
/* Set or clear FD_CLOEXEC on fd.  0 or -errno. */
int fpool__fd_cloexec(int fd, bool on);
/* The parent of pid (from /proc), or -1. */
pid_t fpool__parent_of(pid_t pid);

/* ---- account.c: users and groups --------------------------------------- */

/* A name, or a number, for a user or a group: 0 and *id, or -errno with
 * a message in why[]. */
int fpool__account_lookup(const char *spec, bool group, unsigned *id, char *why,
			  size_t whylen);
/* --user and --group to what a worker switches to.  0, -EINVAL
 * (logged) or -ENOMEM. */
int fpool__account_resolve(const char *user, const char *group,
			   struct fpool__account *a);
/* Switch this process to the account (exactly its groups) and check there
 * is no way back.  0, or -errno with the whole message in why[]. */
int fpool__account_switch(const struct fpool__account *a, const char *user,
			  char *why, size_t whylen);

/* ---- module.c: worker modules ----------------------------------------- */

/* How long the master waits for a module to load in a test process (s). */
#define FPOOL_MODULE_CHECK_TIMEOUT 5.0
/* dlopen() a worker module in this process and find its definition.  0,
 * or -ENOEXEC with one line in err[] naming the file and the reason. */
int fpool__module_open(const char *path, const struct fpool_worker_def **def,
		       void **handle, char *err, size_t errlen);
/* realpath() of a module's path, malloc'd.  0, or -errno with one line. */
int fpool__module_resolve(const char *path, char **out, char *err,
			  size_t errlen);
/* Load the module in a throw-away child switched to `acct` (setup is not
 * called), waiting at most `timeout` s.  0, or -errno (-ENOEXEC: it
 * cannot be used; -ETIMEDOUT) with one line in err[]. */
int fpool__module_check(const char *path, const struct fpool__account *acct,
			const char *user, double timeout, char *err,
			size_t errlen);

/* ---- activity.c: what each worker is doing ----------------------------- */

/* The shared mapping with an entry per possible slot id, or NULL; *fd
 * gets the memfd behind it (CLOEXEC), or -1 where there is none (the
 * mapping is then anonymous and cannot be handed to a new image). */
struct fpool__shared *fpool__activity_map(size_t *len, int *fd);
/* Map a memfd made by fpool__activity_map() (in the image before a
 * binary upgrade), or NULL (logged) if it is not one. */
struct fpool__shared *fpool__activity_adopt(int fd, size_t *len);
/* An entry's text, sanitised, into buf ("" if none). */
void fpool__activity_read(const struct fpool__shared *e, char *buf, size_t len);

/* ---- daemon.c: daemon mode and the pidfile ---------------------------- */

/*
 * Detach from the terminal (daemon(7)): fork, setsid, fork again, so the
 * daemon is re-parented to init (or a subreaper) and, not being a session
 * leader, can never acquire a controlling terminal; chdir("/") (relative
 * paths given to the pool must be made absolute first; the CLI does so);
 * the umask is kept; stdin and stdout go to /dev/null at once.
 *
 * stderr goes to /dev/null in fpool__daemon_ready(), not here: until the
 * daemon reports, whatever it logs to stderr (no --log-file) still
 * reaches the terminal or the script that started it, so a start that
 * fails (pidfile held, bad hook) is explained where it was asked for.
 *
 * The original process does not return: it waits on a CLOEXEC pipe and
 * leaves with _exit(status byte) once the daemon calls
 * fpool__daemon_ready(), or _exit(1) if the pipe closes without a byte
 * (the daemon died).  In the daemon: 0, with *ready_fd the pipe's write
 * end.  Before forking: -errno (nothing changed).
 *
 * Call it before any signal event is added to an event_base (libevent's
 * signal socketpair would be shared with the waiting original process)
 * and before forking workers.  Listeners bound before stay open.
 */
int fpool__daemonize(int *ready_fd);
/* Tell the original process how the start went and close the pipe
 * (*ready_fd = -1): status 0 (the pool started; stderr is then sent to
 * /dev/null) or 1 (it failed: log why *before* calling this).  A no-op
 * when *ready_fd < 0 (not a daemon, or already reported). */
void fpool__daemon_ready(int *ready_fd, int status);
/*
 * Take the pidfile: open (O_RDWR|O_CREAT|O_CLOEXEC|O_NOFOLLOW, 0644: a
 * symbolic link there is refused with -ELOOP) and lock it
 * with flock(LOCK_EX|LOCK_NB).  If another process holds the lock:
 * -EEXIST and *holder = the pid written in the file (0 if none could be
 * read).  Otherwise the file is truncated, gets "PID\n" and is fsynced;
 * 0, and *fd stays open, holding the lock, until fpool__pidfile_remove().
 * A file left by a dead master (no lock) is simply taken over.  -EINVAL
 * if path is not a regular file; other errors -errno.  The lock belongs
 * to the open file description, so workers must not keep *fd open (they
 * close every inherited fd).
 */
int fpool__pidfile_take(const char *path, int *fd, pid_t *holder);
/* Remove the pidfile (unlink, then close fd, so no other master can take
 * the old file in between).  Only the master holding it may call this;
 * a no-op when fd < 0. */
void fpool__pidfile_remove(const char *path, int fd);

/* ---- notify.c: systemd notify and watchdog; listen.c: activation ------ */

/*
 * sd_notify(3) messages from the master.  Through libsystemd when built
 * with it (FPOOL_HAVE_LIBSYSTEMD), else written to $NOTIFY_SOCKET directly
 * (a unix datagram socket; '@' starts an abstract name).  Without
 * NOTIFY_SOCKET each is a no-op.  None can fail: a message that cannot be
 * sent is logged (the first failure as a warning, later ones at debug
 * level) and the pool goes on.
 */
/* READY=1, STATUS="N/N workers ready" and MAINPID=getpid() (right after
 * --daemon too, as the daemon sends it).  Once every initial worker said
 * "ready". */
void fpool__notify_ready(const struct fpool__counts *c);
/* STATUS="R/T workers ready[, S starting][, B in backoff][, reloading]
 * [, stopping]", sent only when it changed since the last STATUS.  After
 * each worker's "ready" and exit. */
void fpool__notify_status(const struct fpool__counts *c);
/* RELOADING=1 with MONOTONIC_USEC (systemd >= 253) when a rolling reload
 * starts; READY=1 when it completed (or was aborted: the pool serves). */
void fpool__notify_reloading(void);
void fpool__notify_reloaded(void);
/* STOPPING=1, when the pool starts to shut down. */
void fpool__notify_stopping(void);
/* If WATCHDOG_USEC is set (and WATCHDOG_PID, when set, is getpid()):
 * send WATCHDOG=1 now and from a persistent timer on `base` every
 * WATCHDOG_USEC / 2.  0, also when there is no watchdog or its variables
 * are malformed (logged); -ENOMEM if the timer cannot be made.  Call it
 * in the master after --daemon (the pid must be the final one) and
 * before the loop runs; a second call is a no-op. */
int fpool__notify_watchdog_start(struct event_base *base);
/* Free the watchdog timer (master side; a no-op without one). */
void fpool__notify_watchdog_stop(void);
/* The watchdog timer, or NULL: a new worker frees it (a timer event,
 * safe to free there). */
struct event *fpool__notify_watchdog_event(void);

/*
 * Socket activation (listen.c), by hand from the environment in every
 * build: if LISTEN_PID is getpid(), the LISTEN_FDS fds starting at 3.
 * Each must be a socket; it is made CLOEXEC and NONBLOCK.  LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES are unset in every case.  0 with *fds
 * (malloc'd, free() it; NULL when *n is 0) and *n, or -EINVAL (malformed
 * LISTEN_FDS), -ENOTSOCK/-EBADF (a bad fd), -ENOMEM; every error logged.
 */
int fpool__listen_activated(int **fds, size_t *n);
/* Whether activated fd is a stream socket bound to address a (a parsed
 * --bind): same family, address and port, or the same unix path.  An
 * IPv4 address also matches an IPv6 socket bound to its v4-mapped form,
 * and 0.0.0.0:P a dual-stack [::]:P (systemd's ListenStream=P). */
bool fpool__listen_matches(int fd, const struct fpool__addr *a);
/* The local address of a bound socket (getsockname), with its text, as
 * fpool__addr_parse() would give it.  0 or -errno. */
int fpool__addr_from_fd(int fd, struct fpool__addr *a);

#endif /* FPOOL_INT_H */
