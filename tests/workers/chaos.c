/*
 * chaos: a test-only worker module that misbehaves on purpose, so the
 * integration tests can check how the master copes.  Built by meson, not
 * installed.  Use: forkpool -k build/tests/workers/chaos.so -- FLAGS
 *
 * Flags (times in milliseconds, counted from the start of main):
 *   --fail-start        on_start fails: the worker exits with status 3
 *                       (FPOOL_EXIT_START_FAILED) before "ready"
 *   --crash-after MS    abort() after MS
 *   --hang-after MS     block the loop forever after MS: no heartbeat, no
 *                       signal handled (only SIGKILL ends it)
 *   --exit-after MS     main returns by itself after MS, with status
 *   --exit-code N       N (default 0)
 *   --ignore-term       SIGTERM is ignored from on_start on
 *   --echo-messages     each message from the master is logged ("chaos
 *                       worker ID got message: TEXT", info) and answered
 *                       with fpool_worker_send(): "pong ID: TEXT"
 *   --blocking          blocking-style main (loops on is_running) instead of
 *                       the event-driven fpool_worker_loop()
 *
 * Flags for the restart, recycling and hung-worker tests.  They act at the
 * start of main (after its "main" line, before the output flags below):
 *   --activity TEXT     fpool_worker_set_activity(w, "%s", TEXT), so a later
 *                       --hang-after hang is reported with it
 *   --count-requests N  fpool_worker_count_requests(w, N) at once and then
 *                       every 100 ms (until on_stop), so --max-requests
 *                       recycles the worker without a real server
 *   --grow-mib N        allocate N MiB and touch every page, so the RSS
 *                       grows by about N MiB (for --max-rss); freed in
 *                       on_shutdown
 *   --say-creds         print the stdout line "chaos worker ID pid PID:
 *                       creds uid R/E/S gid R/E/S groups G,... pdeathsig N"
 *                       (getresuid, getresgid, getgroups and
 *                       prctl(PR_GET_PDEATHSIG)), for the --user tests
 *   --say-tty           print the stdout line "chaos worker ID pid PID:
 *                       stdin KIND tty OPEN|ENXIO|... pgrp P sid S": what
 *                       fd 0 is (/dev/null, tty, pipe...), whether
 *                       /dev/tty opens, its process group and session
 *
 * Output and log flags, for the capture and forwarding tests.  They run at
 * the start of main (after its "main" line and the flags just above, before
 * the timers of the first list), in this order, each flag's output flushed
 * at once:
 *   --lines N:BYTES     print N lines of BYTES bytes ('x'...) to stdout
 *   --say TEXT          printf("TEXT\n") to stdout; repeatable, in order
 *   --esay TEXT         fprintf(stderr, "TEXT\n"); repeatable, in order
 *   --log-records N     N records as fast as possible, i = 0..N-1:
 *                       fpool_log_fields(FPOOL_LOG_INFO, {seq: "i"}, 1,
 *                       "record i of worker ID"), then the stdout line
 *                       "chaos worker ID pid PID: logged N"
 *   --partial TEXT      write(2) TEXT to fd 1 with no newline, then abort()
 *                       (so --raw-bytes never runs with it)
 *   --log TEXT          fpool_log(FPOOL_LOG_INFO, TEXT) with \n, \r, \t,
 *                       \e and \xNN in TEXT made the bytes they name;
 *                       repeatable
 *   --orphan-writer FILE  unless FILE exists (it is created: once per
 *                       test), fork a process that keeps the worker's
 *                       stdout and writes "y\n" to it until that fails;
 *                       it first says "orphan writer pid PID" (stdout)
 *   --raw-bytes         write(2) to fd 1 one line made of every byte
 *                       0x01..0x1f except 0x0a, then 0x00, then invalid
 *                       UTF-8 (80, ff, c3 28, ed a0 80), then "end\n"; then
 *                       fpool_log(FPOOL_LOG_WARNING, "%s", the same bytes),
 *                       which %s cuts at the 0x00
 *
 * Every hook prints one line to stdout, flushed at once:
 *   chaos worker ID pid PID: on_start | main | on_stop | main returned |
 *   main cancelled | on_shutdown
 * If $FORKPOOL_CHAOS_HOOKS names a file, the same line is first appended
 * to it too (one O_APPEND write, so workers do not mix): stdout is a pipe
 * to the master, and once the master is SIGKILLed nobody reads it, yet the
 * tests must see an orphan run on_stop and on_shutdown.
 * It serves no connections.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "forkpool.h"

struct chaos {
	int fail_start, ignore_term, blocking, exit_code, echo_messages;
	long crash_after, hang_after, exit_after; /* ms, -1 = never */
	/* Output flags: pointers into the worker's argv, which outlives us. */
	const char **say, **esay;
	size_t nsay, nesay;
	long log_records; /* -1 = none */
	const char *partial;
	int raw_bytes;
	struct event *crash_ev, *hang_ev, *exit_ev;
	int exit_now;		/* blocking main: --exit-after is due */
	const char *activity;	/* --activity, or NULL */
	long count_requests;	/* --count-requests, -1 = none */
	long grow_mib;		/* --grow-mib, -1 = none */
	struct event *count_ev; /* the 100 ms --count-requests timer */
	char *grown;		/* the --grow-mib block */
	int say_creds;		/* --say-creds */
	int say_tty;		/* --say-tty */
	const char **log;	/* --log texts */
	size_t nlog;
	long lines, line_bytes;	   /* --lines N:BYTES, -1 = none */
	const char *orphan_writer; /* --orphan-writer FILE */
};

/* One instance per process: a worker module's state may be static. */
static struct chaos chaos;

static void say(struct fpool_worker *w, const char *what)
{
	const char *hooks = getenv("FORKPOOL_CHAOS_HOOKS");
	char line[256];
	int n;

	n = snprintf(line, sizeof(line), "chaos worker %u pid %d: %s\n",
		     fpool_worker_id(w), (int)fpool_worker_pid(w), what);
	if (hooks != NULL && *hooks != '\0' && n > 0 &&
	    (size_t)n < sizeof(line)) {
		int fd = open(hooks, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
			      0644);

		if (fd >= 0) {
			if (write(fd, line, (size_t)n) != n)
				perror("chaos: write $FORKPOOL_CHAOS_HOOKS");
			close(fd);
		}
	}
	printf("chaos worker %u pid %d: %s\n", fpool_worker_id(w),
	       (int)fpool_worker_pid(w), what);
	fflush(stdout);
}

static long parse_ms(const char *flag, const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0) {
		fprintf(stderr, "chaos: %s: bad number '%s'\n", flag, s);
		return -2;
	}
	return v;
}

/* Append `text` to a list of argv strings; the list can hold argc. */
static int push(const char ***list, size_t *n, int argc, const char *text)
{
	if (*list == NULL) {
		*list = calloc((size_t)argc, sizeof(**list));
		if (*list == NULL) {
			perror("chaos: calloc");
			return -1;
		}
	}
	(*list)[(*n)++] = text;
	return 0;
}

static int chaos_setup(struct fpool_worker *w, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "fail-start", no_argument, NULL, 'f' },
		{ "crash-after", required_argument, NULL, 'c' },
		{ "hang-after", required_argument, NULL, 'H' },
		{ "exit-after", required_argument, NULL, 'e' },
		{ "exit-code", required_argument, NULL, 'x' },
		{ "ignore-term", no_argument, NULL, 'i' },
		{ "echo-messages", no_argument, NULL, 'E' },
		{ "blocking", no_argument, NULL, 'b' },
		{ "say", required_argument, NULL, 's' },
		{ "esay", required_argument, NULL, 'S' },
		{ "log-records", required_argument, NULL, 'l' },
		{ "partial", required_argument, NULL, 'p' },
		{ "raw-bytes", no_argument, NULL, 'r' },
		{ "activity", required_argument, NULL, 'a' },
		{ "count-requests", required_argument, NULL, 'n' },
		{ "grow-mib", required_argument, NULL, 'g' },
		{ "say-creds", no_argument, NULL, 'C' },
		{ "say-tty", no_argument, NULL, 'T' },
		{ "log", required_argument, NULL, 'L' },
		{ "lines", required_argument, NULL, 'N' },
		{ "orphan-writer", required_argument, NULL, 'O' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	(void)w;
	chaos.crash_after = chaos.hang_after = chaos.exit_after = -1;
	chaos.log_records = chaos.count_requests = chaos.grow_mib = -1;
	chaos.lines = chaos.line_bytes = -1;
	optind = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			chaos.fail_start = 1;
			break;
		case 'c':
			chaos.crash_after = parse_ms("--crash-after", optarg);
			break;
		case 'H':
			chaos.hang_after = parse_ms("--hang-after", optarg);
			break;
		case 'e':
			chaos.exit_after = parse_ms("--exit-after", optarg);
			break;
		case 'x':
			chaos.exit_code = (int)parse_ms("--exit-code", optarg);
			break;
		case 'i':
			chaos.ignore_term = 1;
			break;
		case 'E':
			chaos.echo_messages = 1;
			break;
		case 'b':
			chaos.blocking = 1;
			break;
		case 's':
			if (push(&chaos.say, &chaos.nsay, argc, optarg) != 0)
				return -1;
			break;
		case 'S':
			if (push(&chaos.esay, &chaos.nesay, argc, optarg) != 0)
				return -1;
			break;
		case 'l':
			chaos.log_records = parse_ms("--log-records", optarg);
			break;
		case 'p':
			chaos.partial = optarg;
			break;
		case 'r':
			chaos.raw_bytes = 1;
			break;
		case 'a':
			chaos.activity = optarg;
			break;
		case 'n':
			chaos.count_requests =
				parse_ms("--count-requests", optarg);
			break;
		case 'g':
			chaos.grow_mib = parse_ms("--grow-mib", optarg);
			break;
		case 'C':
			chaos.say_creds = 1;
			break;
		case 'T':
			chaos.say_tty = 1;
			break;
		case 'L':
			if (push(&chaos.log, &chaos.nlog, argc, optarg) != 0)
				return -1;
			break;
		case 'N':
			if (sscanf(optarg, "%ld:%ld", &chaos.lines,
				   &chaos.line_bytes) != 2 ||
			    chaos.lines < 0 || chaos.line_bytes < 0) {
				fprintf(stderr, "chaos: --lines N:BYTES\n");
				return -1;
			}
			break;
		case 'O':
			chaos.orphan_writer = optarg;
			break;
		default:
			fprintf(stderr, "chaos: unknown flag\n");
			return -1;
		}
	}
	if (chaos.crash_after < -1 || chaos.hang_after < -1 ||
	    chaos.exit_after < -1 || chaos.exit_code < 0 ||
	    chaos.log_records < -1 || chaos.count_requests < -1 ||
	    chaos.grow_mib < -1)
		return -1;
	return 0;
}

static void chaos_message(struct fpool_worker *w, const void *data, size_t len,
			  void *arg)
{
	char reply[256];
	int n, r;

	(void)arg;
	fpool_log(FPOOL_LOG_INFO, "chaos worker %u got message: %.*s",
		  fpool_worker_id(w), (int)(len < 200 ? len : 200),
		  (const char *)data);
	n = snprintf(reply, sizeof(reply), "pong %u: %.*s", fpool_worker_id(w),
		     (int)(len < 200 ? len : 200), (const char *)data);
	if ((r = fpool_worker_send(w, reply, (size_t)n)) != 0)
		fpool_log(FPOOL_LOG_WARNING, "chaos worker %u: reply: %s",
			  fpool_worker_id(w), fpool_strerror(r));
}

static int chaos_on_start(struct fpool_worker *w, void *arg)
{
	(void)arg;
	say(w, "on_start");
	if (chaos.fail_start)
		return -1;
	if (chaos.echo_messages)
		fpool_worker_on_message(w, chaos_message, NULL);
	if (chaos.ignore_term && signal(SIGTERM, SIG_IGN) == SIG_ERR) {
		perror("chaos: signal");
		return -1;
	}
	return 0;
}

static int chaos_on_stop(struct fpool_worker *w, void *arg)
{
	(void)arg;
	say(w, "on_stop");
	/* Our timers must not keep a stopping worker alive. */
	if (chaos.crash_ev)
		event_del(chaos.crash_ev);
	if (chaos.hang_ev)
		event_del(chaos.hang_ev);
	if (chaos.exit_ev)
		event_del(chaos.exit_ev);
	if (chaos.count_ev)
		event_del(chaos.count_ev);
	return 0;
}

static int chaos_on_shutdown(struct fpool_worker *w, void *arg)
{
	(void)arg;
	say(w, "on_shutdown");
	if (chaos.crash_ev)
		event_free(chaos.crash_ev);
	if (chaos.hang_ev)
		event_free(chaos.hang_ev);
	if (chaos.exit_ev)
		event_free(chaos.exit_ev);
	if (chaos.count_ev)
		event_free(chaos.count_ev);
	free(chaos.grown);
	return 0;
}

static void crash_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	abort();
}

static void hang_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (;;)
		pause(); /* signals only set libevent's flag: never handled */
}

static void exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fpool_worker *w = arg;

	(void)fd;
	(void)what;
	chaos.exit_now = 1;
	if (!chaos.blocking)
		event_base_loopbreak(fpool_worker_base(w));
}

static struct event *after(struct fpool_worker *w, long ms,
			   event_callback_fn cb)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event *ev;

	if (ms < 0)
		return NULL;
	ev = evtimer_new(fpool_worker_base(w), cb, w);
	if (ev == NULL || evtimer_add(ev, &tv) != 0) {
		fprintf(stderr, "chaos: cannot arm a timer\n");
		abort();
	}
	return ev;
}

static void count_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fpool_worker_count_requests(arg, (uint64_t)chaos.count_requests);
}

/* --say-creds: what the worker runs as, and its parent-death signal. */
static void say_creds(struct fpool_worker *w)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg, groups[64];
	int sig = -1, n = getgroups(64, groups);
	char line[1024];
	size_t len;

	if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 ||
	    prctl(PR_GET_PDEATHSIG, &sig) != 0) {
		perror("chaos: --say-creds");
		abort();
	}
	len = (size_t)snprintf(line, sizeof(line),
			       "creds uid %u/%u/%u gid %u/%u/%u groups ",
			       (unsigned)ru, (unsigned)eu, (unsigned)su,
			       (unsigned)rg, (unsigned)eg, (unsigned)sg);
	for (int i = 0; i < n && len < sizeof(line) - 32; i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%u",
					i ? "," : "", (unsigned)groups[i]);
	snprintf(line + len, sizeof(line) - len, "%s pdeathsig %d",
		 n > 0 ? "" : "-", sig);
	say(w, line);
}

/* --say-tty: what the worker has of a terminal. */
static void say_tty(struct fpool_worker *w)
{
	struct stat st;
	char path[64], target[256] = "?", line[512];
	const char *kind = "?";
	int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", STDIN_FILENO);
	n = readlink(path, target, sizeof(target) - 1);
	if (n >= 0)
		target[n] = '\0';
	if (fstat(STDIN_FILENO, &st) < 0)
		kind = "closed";
	else if (strcmp(target, "/dev/null") == 0)
		kind = "/dev/null";
	else if (isatty(STDIN_FILENO))
		kind = "tty";
	else if (S_ISFIFO(st.st_mode))
		kind = "pipe";
	else if (S_ISSOCK(st.st_mode))
		kind = "socket";
	else
		kind = target;
	snprintf(line, sizeof(line), "stdin %s tty %s pgrp %d sid %d", kind,
		 fd >= 0 ? "OPEN" : strerrorname_np(errno), (int)getpgrp(),
		 (int)getsid(0));
	if (fd >= 0)
		close(fd);
	say(w, line);
}

/* --log TEXT: the text with its escapes made bytes. */
static void log_text(const char *text)
{
	char buf[4096];
	size_t n = 0;

	for (const char *p = text; *p && n < sizeof(buf) - 1; p++) {
		if (*p != '\\' || p[1] == '\0') {
			buf[n++] = *p;
			continue;
		}
		switch (*++p) {
		case 'n':
			buf[n++] = '\n';
			break;
		case 'r':
			buf[n++] = '\r';
			break;
		case 't':
			buf[n++] = '\t';
			break;
		case 'e':
			buf[n++] = 0x1b;
			break;
		case 'x':
			if (p[1] && p[2]) {
				char hex[3] = { p[1], p[2], 0 };

				buf[n++] = (char)strtol(hex, NULL, 16);
				p += 2;
			}
			break;
		default:
			buf[n++] = *p;
			break;
		}
	}
	buf[n] = '\0';
	fpool_log(FPOOL_LOG_INFO, "%s", buf);
}

/* --orphan-writer: a process of ours that outlives us, writing to the
 * stdout we share with it. */
static void orphan_writer(struct fpool_worker *w)
{
	char line[64];
	pid_t pid;
	int fd = open(chaos.orphan_writer,
		      O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0)
		return; /* done once already */
	close(fd);
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("chaos: fork");
		abort();
	}
	if (pid > 0) {
		snprintf(line, sizeof(line), "orphan writer pid %d", (int)pid);
		say(w, line);
		return;
	}
	/* The default action: die quietly once the master closes it. */
	signal(SIGPIPE, SIG_DFL);
	for (;;)
		if (write(STDOUT_FILENO, "y\n", 2) < 0 && errno != EINTR)
			_exit(0);
}

/* --activity, --count-requests, --grow-mib, --say-creds and --say-tty, at
 * the start of main. */
static void chaos_state(struct fpool_worker *w)
{
	if (chaos.say_creds)
		say_creds(w);
	if (chaos.say_tty)
		say_tty(w);
	if (chaos.activity != NULL)
		fpool_worker_set_activity(w, "%s", chaos.activity);
	if (chaos.count_requests >= 0) {
		struct timeval tv = { 0, 100 * 1000 };

		fpool_worker_count_requests(w, (uint64_t)chaos.count_requests);
		chaos.count_ev = event_new(fpool_worker_base(w), -1, EV_PERSIST,
					   count_cb, w);
		if (chaos.count_ev == NULL ||
		    event_add(chaos.count_ev, &tv) != 0) {
			fprintf(stderr, "chaos: cannot arm a timer\n");
			abort();
		}
	}
	if (chaos.grow_mib > 0) {
		size_t len = (size_t)chaos.grow_mib << 20;
		long page = sysconf(_SC_PAGESIZE);
		size_t step = page > 0 ? (size_t)page : 4096;

		chaos.grown = malloc(len);
		if (chaos.grown == NULL) {
			perror("chaos: --grow-mib");
			abort();
		}
		/* Non-zero bytes on every page: each one is really there. */
		for (size_t i = 0; i < len; i += step)
			((volatile char *)chaos.grown)[i] = 1;
		((volatile char *)chaos.grown)[len - 1] = 1;
	}
}

/* write(2) all of buf to fd, past short writes and EINTR. */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			perror("chaos: write");
			abort();
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void raw_bytes(void)
{
	/* Split after the last \x escape, which would swallow the 'e'. */
	static const char tail[] = "\0\x80\xff\xc3\x28\xed\xa0\x80"
				   "end\n";
	char line[64];
	size_t n = 0;

	for (int c = 0x01; c <= 0x1f; c++)
		if (c != '\n')
			line[n++] = (char)c;
	memcpy(line + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	write_all(STDOUT_FILENO, line, n);
	line[n - 1] = '\0'; /* the record: same bytes, no newline */
	fpool_log(FPOOL_LOG_WARNING, "%s", line);
}

/* The output flags, in their documented order. */
static void chaos_output(struct fpool_worker *w)
{
	if (chaos.lines > 0) {
		char *line = malloc((size_t)chaos.line_bytes + 1);

		if (line == NULL) {
			perror("chaos: --lines");
			abort();
		}
		memset(line, 'x', (size_t)chaos.line_bytes);
		line[chaos.line_bytes] = '\n';
		for (long i = 0; i < chaos.lines; i++)
			write_all(STDOUT_FILENO, line,
				  (size_t)chaos.line_bytes + 1);
		free(line);
	}
	for (size_t i = 0; i < chaos.nsay; i++) {
		printf("%s\n", chaos.say[i]);
		fflush(stdout);
	}
	for (size_t i = 0; i < chaos.nesay; i++) {
		fprintf(stderr, "%s\n", chaos.esay[i]);
		fflush(stderr);
	}
	for (size_t i = 0; i < chaos.nlog; i++)
		log_text(chaos.log[i]);
	if (chaos.orphan_writer)
		orphan_writer(w);
	if (chaos.log_records >= 0) {
		unsigned id = fpool_worker_id(w);
		char seq[32], what[64];

		for (long i = 0; i < chaos.log_records; i++) {
			snprintf(seq, sizeof(seq), "%ld", i);
			fpool_log_fields(
				FPOOL_LOG_INFO,
				&(struct fpool_log_field){ "seq", seq }, 1,
				"record %ld of worker %u", i, id);
		}
		snprintf(what, sizeof(what), "logged %ld", chaos.log_records);
		say(w, what);
	}
	if (chaos.partial) {
		fflush(NULL);
		write_all(STDOUT_FILENO, chaos.partial, strlen(chaos.partial));
		abort();
	}
	if (chaos.raw_bytes) {
		fflush(NULL);
		raw_bytes();
	}
}

static int chaos_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	say(w, "main");
	chaos_state(w);
	chaos_output(w);
	chaos.crash_ev = after(w, chaos.crash_after, crash_cb);
	chaos.hang_ev = after(w, chaos.hang_after, hang_cb);
	chaos.exit_ev = after(w, chaos.exit_after, exit_cb);
	if (chaos.blocking) {
		struct timespec nap = { 0, 5 * 1000 * 1000 };

		while (fpool_worker_is_running(w) && !chaos.exit_now)
			nanosleep(&nap, NULL); /* "work" */
	} else {
		fpool_worker_loop(w);
	}
	say(w,
	    fpool_worker_interrupted(w) ? "main cancelled" : "main returned");
	return chaos.exit_now ? chaos.exit_code : 0;
}

static const struct fpool_worker_def chaos_def = {
	.name = "chaos",
	.description = "test worker that misbehaves on purpose",
	.setup = chaos_setup,
	.on_start = chaos_on_start,
	.on_stop = chaos_on_stop,
	.on_shutdown = chaos_on_shutdown,
	.main = chaos_main,
};

FPOOL_WORKER_MODULE(chaos_def);
