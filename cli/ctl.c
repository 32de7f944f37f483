/*
 * `forkpool ctl`: the control socket's client.
 *
 *   forkpool ctl [--control PATH] [--json] [--timeout SEC] COMMAND [ARGS]
 *
 * It sends one request with a fresh hex id, waits for the reply that
 * echoes it, and prints the result: a table for status, plain text for
 * the rest, or the raw JSON result with --json.  Exit status: 0 on
 * success, 1 when the master is not there or refuses, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"

#define CTL_REPLY_MAX (16 * 1024 * 1024)

static void ctl_usage(FILE *out)
{
	fprintf(out,
		"Usage: forkpool ctl [--control PATH] [--json] [--timeout SEC] "
		"COMMAND [ARGS]\n"
		"Commands:\n"
		"  status              the pool and its workers\n"
		"  scale N             run N workers (slots 0..N-1)\n"
		"  add ID, remove ID   start / gracefully stop worker ID\n"
		"  kill ID [SIGNAL]    signal worker ID (default TERM); it is "
		"replaced\n"
		"  reload              rolling reload of every worker\n"
		"  upgrade             re-execute the binary on disk (same "
		"pid), then a\n"
		"                      rolling reload; answers once it took "
		"over\n"
		"  stop [--now]        stop the pool (--now: interrupt)\n"
		"  output ID [LINES]   the last lines worker ID printed\n"
		"  send ID|all TEXT    send TEXT to worker ID's (or every "
		"worker's)\n"
		"                      fpool_worker_on_message() callback\n"
		"  events              print the pool's events as JSON lines "
		"(workers\n"
		"                      started, ready, exited; reload, "
		"upgrade, scale,\n"
		"                      backoff; workers' messages) until the "
		"master stops\n"
		"The socket is --control PATH, or $FORKPOOL_CONTROL.\n");
}

static int ctl_error(const char *fmt, ...) FPOOL_PRINTF(1, 2);

static int ctl_error(const char *fmt, ...)
{
	va_list ap;

	fputs("forkpool ctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

/* Add "key": N, with N checked to be a whole number in [min, max]. */
static int add_uint(yajl_gen g, const char *key, const char *arg, unsigned min,
		    unsigned max)
{
	unsigned v;

	if (fpool__parse_uint(arg, min, max, &v) != 0)
		return ctl_error("%s: '%s' is not a whole number from %u to %u",
				 key, arg, min, max);
	fpool__json_str(g, key);
	yajl_gen_integer(g, v);
	return 0;
}

/* Build the request for argv (COMMAND ARGS...).  0 or 2. */
static int build_request(yajl_gen g, const char *id, int argc, char **argv)
{
	const char *cmd = argv[0];
	int want = 1, r = 0;

	yajl_gen_map_open(g);
	fpool__json_str(g, "id");
	fpool__json_str(g, id);
	fpool__json_str(g, "cmd");
	fpool__json_str(g, cmd);
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 ||
	    strcmp(cmd, "upgrade") == 0 || strcmp(cmd, "events") == 0) {
		want = 1;
	} else if (strcmp(cmd, "send") == 0) {
		want = 3;
		if (argc >= 2 && strcmp(argv[1], "all") == 0) {
			fpool__json_str(g, "worker");
			fpool__json_str(g, "all");
		} else if (argc >= 2) {
			r = add_uint(g, "worker", argv[1], 0,
				     FPOOL_MAX_WORKERS - 1);
		}
		if (r == 0 && argc >= 3) {
			if (!fpool_utf8_valid(argv[2], strlen(argv[2])))
				return ctl_error("send: the message is not "
						 "UTF-8 text");
			if (strlen(argv[2]) > FPOOL_MESSAGE_MAX)
				return ctl_error("send: a message is at most "
						 "%d bytes",
						 FPOOL_MESSAGE_MAX);
			fpool__json_str(g, "data");
			fpool__json_str(g, argv[2]);
		}
	} else if (strcmp(cmd, "scale") == 0) {
		want = 2;
		if (argc >= 2)
			r = add_uint(g, "workers", argv[1], 1,
				     FPOOL_MAX_WORKERS);
	} else if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) {
		want = 2;
		if (argc >= 2)
			r = add_uint(g, "worker", argv[1], 0,
				     FPOOL_MAX_WORKERS - 1);
	} else if (strcmp(cmd, "kill") == 0) {
		want = argc >= 3 ? 3 : 2;
		if (argc >= 2)
			r = add_uint(g, "worker", argv[1], 0,
				     FPOOL_MAX_WORKERS - 1);
		if (r == 0 && argc >= 3) {
			if (fpool__signal_parse(argv[2]) < 0)
				return ctl_error("kill: '%s' is not a signal "
						 "name (e.g. TERM, KILL)",
						 argv[2]);
			fpool__json_str(g, "signal");
			fpool__json_str(g, argv[2]);
		}
	} else if (strcmp(cmd, "stop") == 0) {
		want = argc >= 2 ? 2 : 1;
		if (argc >= 2 && strcmp(argv[1], "--now") != 0)
			return ctl_error("stop: unknown argument '%s'",
					 argv[1]);
		fpool__json_str(g, "graceful");
		yajl_gen_bool(g, argc < 2);
	} else if (strcmp(cmd, "output") == 0) {
		want = argc >= 3 ? 3 : 2;
		if (argc >= 2)
			r = add_uint(g, "worker", argv[1], 0,
				     FPOOL_MAX_WORKERS - 1);
		if (r == 0 && argc >= 3)
			r = add_uint(g, "lines", argv[2], 1, 100000);
	} else {
		return ctl_error("unknown command '%s' (see --help)", cmd);
	}
	if (r != 0)
		return r;
	if (argc != want)
		return ctl_error("%s: expected %d argument%s, got %d", cmd,
				 want - 1, want == 2 ? "" : "s", argc - 1);
	yajl_gen_map_close(g);
	return 0;
}

/* Send one request line and read the reply line.  0 or 1 (printed). */
static int exchange(const char *path, const char *req, size_t len,
		    double timeout, char **reply, int *keep)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t cap = 4096, n = 0;
	char *buf;
	int fd, werr;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "forkpool ctl: %s: path too long\n", path);
		return 1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr,
			"forkpool ctl: cannot connect to %s: %s (is the master "
			"running with --control %s?)\n",
			path, strerror(errno), path);
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if ((werr = fpool__write_all(fd, req, len)) != 0 && werr != -EPIPE &&
	    werr != -ECONNRESET) {
		fprintf(stderr, "forkpool ctl: sending to %s: %s\n", path,
			strerror(-werr));
		close(fd);
		return 1;
	}
	/* A master that refuses us (another user) closes at once, having
	 * said why: read that rather than report only the broken pipe. */
	buf = malloc(cap);
	while (buf != NULL) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, (int)(timeout * 1000));
		ssize_t got;

		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0) {
			fprintf(stderr,
				"forkpool ctl: no reply within %.3g s\n",
				timeout);
			break;
		}
		if (n + 1 == cap) {
			char *more = cap < CTL_REPLY_MAX ? realloc(buf, cap * 2)
							 : NULL;

			if (more == NULL) {
				fprintf(stderr, "forkpool ctl: reply too "
						"large\n");
				break;
			}
			buf = more;
			cap *= 2;
		}
		got = pr < 0 ? -1 : read(fd, buf + n, cap - n - 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (werr != 0)
				fprintf(stderr,
					"forkpool ctl: the master at %s "
					"closed the connection before our "
					"request was sent (%s)\n",
					path, strerror(-werr));
			else if (got < 0)
				fprintf(stderr,
					"forkpool ctl: reading the reply: "
					"%s\n",
					strerror(errno));
			else
				fprintf(stderr,
					"forkpool ctl: the master closed the "
					"connection without a reply\n");
			break;
		}
		n += (size_t)got;
		buf[n] = '\0';
		if (memchr(buf, '\n', n) != NULL) {
			if (keep != NULL)
				*keep = fd; /* `events`: more lines follow */
			else
				close(fd);
			*reply = buf;
			return 0;
		}
	}
	free(buf);
	close(fd);
	return 1;
}

/* `events`: copy the master's lines to stdout as they come, `early`
 * (what came with the reply) first, until the master closes (0). */
static int stream_events(int fd, const char *early)
{
	char buf[65536];
	ssize_t n;

	if (fputs(early, stdout) == EOF || fflush(stdout) == EOF)
		return errno == EPIPE ? 0 : 1;
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "forkpool ctl: reading events: %s\n",
				strerror(errno));
			return 1;
		}
		if (n == 0)
			return 0; /* the master stopped, or dropped us */
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n ||
		    fflush(stdout) == EOF)
			/* The reader went away (| head): done. */
			return errno == EPIPE ? 0 : 1;
	}
}

/* Write v into g again (to print the result as JSON). */
static void regen(yajl_gen g, yajl_val v)
{
	if (YAJL_IS_OBJECT(v)) {
		yajl_gen_map_open(g);
		for (size_t i = 0; i < v->u.object.len; i++) {
			fpool__json_str(g, v->u.object.keys[i]);
			regen(g, v->u.object.values[i]);
		}
		yajl_gen_map_close(g);
	} else if (YAJL_IS_ARRAY(v)) {
		yajl_gen_array_open(g);
		for (size_t i = 0; i < v->u.array.len; i++)
			regen(g, v->u.array.values[i]);
		yajl_gen_array_close(g);
	} else if (YAJL_IS_STRING(v)) {
		fpool__json_str(g, v->u.string);
	} else if (YAJL_IS_NUMBER(v)) {
		yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
	} else if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v)) {
		yajl_gen_bool(g, YAJL_IS_TRUE(v));
	} else {
		yajl_gen_null(g);
	}
}

/* Print s on a line, its control characters escaped: a worker's output
 * (or anything the master relays) must not drive the terminal. */
static void put_escaped(const char *s, size_t len)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		puts("(out of memory)");
		return;
	}
	fpool__text_escape(b, s, len);
	evbuffer_add(b, "\n", 1);
	fwrite(evbuffer_pullup(b, -1), 1, evbuffer_get_length(b), stdout);
	evbuffer_free(b);
}

/* A table cell: escaped (see put_escaped) into buf. */
static const char *clean(const char *s, char *buf, size_t n)
{
	struct evbuffer *b = evbuffer_new();
	size_t len;

	if (b == NULL)
		return "?";
	fpool__text_escape(b, s, strlen(s));
	len = evbuffer_get_length(b);
	if (len >= n)
		len = n - 1;
	evbuffer_remove(b, buf, len);
	buf[len] = '\0';
	evbuffer_free(b);
	return buf;
}

/* A value as short text for the table ("-" for null/missing). */
static const char *cell(yajl_val obj, const char *key, char *buf, size_t n,
			const char *unit)
{
	yajl_val v = fpool__json_get(obj, key);

	if (v == NULL || YAJL_IS_NULL(v))
		return "-";
	if (YAJL_IS_STRING(v))
		return clean(v->u.string, buf, n);
	if (YAJL_IS_NUMBER(v)) {
		snprintf(buf, n, "%s%s", v->u.number.r, unit);
		return buf;
	}
	return YAJL_IS_TRUE(v) ? "yes" : "no";
}

static void print_status(yajl_val r)
{
	yajl_val workers = fpool__json_get(r, "workers");
	yajl_val upgrade = fpool__json_get(r, "upgrade");
	char a[64], b[64], c[64], d[64], e[64], f[64], g[64], h[64];

	printf("master pid %s, %s of %s workers live, up %s s, %s "
	       "restarts%s%s%s\n",
	       cell(r, "pid", a, sizeof(a), ""),
	       cell(r, "live", b, sizeof(b), ""),
	       cell(r, "target", c, sizeof(c), ""),
	       cell(r, "uptime", d, sizeof(d), ""),
	       cell(r, "restarts", e, sizeof(e), ""),
	       YAJL_IS_TRUE(fpool__json_get(r, "reloading")) ? ", reloading"
							     : "",
	       YAJL_IS_STRING(upgrade) ? ", binary upgrade: " : "",
	       YAJL_IS_STRING(upgrade) ? cell(r, "upgrade", f, sizeof(f), "")
				       : "");
	printf("%-4s %-8s %-9s %-10s %-8s %-9s %-10s %-9s %s\n", "ID", "PID",
	       "STATE", "UPTIME", "RESTARTS", "HEARTBEAT", "RSS", "REQUESTS",
	       "LAST EXIT");
	for (size_t i = 0; YAJL_IS_ARRAY(workers) && i < workers->u.array.len;
	     i++) {
		yajl_val w = workers->u.array.values[i];
		yajl_val role = fpool__json_get(w, "role");
		char state[32];

		snprintf(state, sizeof(state), "%s%s",
			 cell(w, "state", a, sizeof(a), ""),
			 YAJL_IS_STRING(role) &&
					 strcmp(role->u.string, "worker") != 0
				 ? "*"
				 : "");
		printf("%-4s %-8s %-9s %-10s %-8s %-9s %-10s %-9s %s\n",
		       cell(w, "id", b, sizeof(b), ""),
		       cell(w, "pid", c, sizeof(c), ""), state,
		       fpool__json_get(w, "uptime")
			       ? cell(w, "uptime", d, sizeof(d), "s")
			       : cell(w, "backoff_left", d, sizeof(d),
				      "s left"),
		       cell(w, "restarts", e, sizeof(e), ""),
		       cell(w, "heartbeat_age", f, sizeof(f), "s"),
		       cell(w, "rss_kib", g, sizeof(g), " KiB"),
		       cell(w, "requests", a, sizeof(a), ""),
		       cell(w, "last_exit", h, sizeof(h), ""));
		/* What it said it does (fpool_worker_set_activity(), or an
		 * exec'd program's STATUS=). */
		if (YAJL_IS_STRING(fpool__json_get(w, "activity")))
			printf("     doing: %s\n",
			       cell(w, "activity", h, sizeof(h), ""));
	}
}

static void print_result(const char *cmd, yajl_val r, bool json)
{
	if (json) {
		yajl_gen g = yajl_gen_alloc(NULL);
		const unsigned char *buf;
		size_t n;

		if (g == NULL)
			return;
		regen(g, r);
		yajl_gen_get_buf(g, &buf, &n);
		fwrite(buf, 1, n, stdout);
		fputc('\n', stdout);
		yajl_gen_free(g);
		return;
	}
	if (strcmp(cmd, "status") == 0 || strcmp(cmd, "scale") == 0) {
		print_status(r);
	} else if (strcmp(cmd, "output") == 0) {
		yajl_val lines = fpool__json_get(r, "lines");

		for (size_t i = 0;
		     YAJL_IS_ARRAY(lines) && i < lines->u.array.len; i++)
			if (YAJL_IS_STRING(lines->u.array.values[i]))
				put_escaped(lines->u.array.values[i]->u.string,
					    strlen(lines->u.array.values[i]
							   ->u.string));
	} else if (strcmp(cmd, "send") == 0) {
		char a[32];

		const char *n = cell(r, "sent", a, sizeof(a), "");

		printf("sent to %s worker%s\n", n,
		       strcmp(n, "1") == 0 ? "" : "s");
	} else if (strcmp(cmd, "upgrade") == 0) {
		char a[64], b[64], c[64];

		printf("upgraded: master pid %s runs forkpool %s; ",
		       cell(r, "pid", a, sizeof(a), ""),
		       cell(r, "version", b, sizeof(b), ""));
		if (YAJL_IS_TRUE(fpool__json_get(r, "fallback")))
			puts("it could not read the previous state: fresh "
			     "workers replace the old ones");
		else
			printf("replacing its %s workers\n",
			       cell(r, "workers", c, sizeof(c), ""));
	} else {
		puts("ok");
	}
}

int fpool__ctl_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = getenv("FORKPOOL_CONTROL");
	double timeout = 10;
	bool json = false, timeout_given = false;
	unsigned char rnd[4] = { 0 };
	char id[16], *reply = NULL, err[256];
	const unsigned char *req;
	size_t len;
	yajl_gen g;
	yajl_val tree, idv, ok;
	int c, status, events_fd = -1;
	bool events;

	/* A master that hangs up on us must make a write fail, not kill
	 * us (EPIPE is handled in exchange()). */
	signal(SIGPIPE, SIG_IGN);
	optind = 0;
	opterr = 0;
	/* '+': stop at COMMAND, so `kill 3 -9`-like args stay arguments. */
	while ((c = getopt_long(argc, argv, "+jh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 't':
			if (fpool__parse_duration(optarg, &timeout) != 0)
				return ctl_error("--timeout: '%s' is not a "
						 "duration",
						 optarg);
			timeout_given = true;
			break;
		case 'h':
			ctl_usage(stdout);
			return 0;
		default:
			return ctl_error("unknown option '%s' (see --help)",
					 argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return ctl_error("no command given (see --help)");
	/* An upgrade answers after the new binary's check (up to 30 s) and
	 * the hand-over. */
	if (!timeout_given && strcmp(argv[optind], "upgrade") == 0)
		timeout = FPOOL_UPGRADE_CHECK_TIMEOUT + 30;
	if (path == NULL || path[0] == '\0')
		return ctl_error("--control: no control socket given (or set "
				 "FORKPOOL_CONTROL)");
	/* The id only has to be unique among this client's requests; any
	 * failure of getrandom leaves a fixed but valid one. */
	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) < 0)
		rnd[0] = (unsigned char)getpid();
	snprintf(id, sizeof(id), "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2],
		 rnd[3]);
	events = strcmp(argv[optind], "events") == 0;
	g = yajl_gen_alloc(NULL);
	if (g == NULL)
		return ctl_error("out of memory");
	status = build_request(g, id, argc - optind, argv + optind);
	if (status == 0) {
		yajl_gen_get_buf(g, &req, &len);
		char line[len + 1];

		memcpy(line, req, len);
		line[len] = '\n';
		status = exchange(path, line, len + 1, timeout, &reply,
				  events ? &events_fd : NULL);
	}
	yajl_gen_free(g);
	if (status != 0)
		return status;
	char *rest = reply + strcspn(reply, "\n") + 1;

	reply[strcspn(reply, "\n")] = '\0';
	tree = yajl_tree_parse(reply, err, sizeof(err));
	idv = fpool__json_get(tree, "id");
	ok = fpool__json_get(tree, "ok");
	if (tree == NULL || ok == NULL) {
		fprintf(stderr, "forkpool ctl: malformed reply: %s\n", reply);
		status = 1;
	} else if (!YAJL_IS_TRUE(ok)) {
		yajl_val e = fpool__json_get(tree, "error");

		fprintf(stderr, "forkpool ctl: %s\n",
			YAJL_IS_STRING(e) ? e->u.string : "error");
		status = 1;
	} else if (!YAJL_IS_STRING(idv) || strcmp(idv->u.string, id) != 0) {
		fprintf(stderr, "forkpool ctl: the reply is not to our request "
				"(id)\n");
		status = 1;
	} else if (events) {
		status = stream_events(events_fd, rest);
	} else {
		print_result(argv[optind], fpool__json_get(tree, "result"),
			     json);
	}
	if (events_fd >= 0)
		close(events_fd);
	yajl_tree_free(tree);
	free(reply);
	return status;
}
