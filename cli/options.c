/*
 * The forkpool command line: `forkpool [OPTIONS] [-- WORKER-ARGS]`, and
 * the config file given with --config (defaults < file < flags).
 *
 * This file holds the option table and the --help made from it; args.c
 * parses a command line and a config file against it.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define STR_(x) #x
#define STR(x)	STR_(x)

/*
 * Every option: its long name (also its key in the config file), whether
 * it takes a value, its short letter or OPT_ code, what the config file
 * may give for it, and its line of --help (the value's name and what it
 * does), which is made from this table, in its order.
 */
const struct cli_option cli_options[] = {
	{ "workers", required_argument, 'w', IN_FILE_VALUE, "N",
	  "pool size, 1.." STR(
		  FPOOL_MAX_WORKERS) " (default: number of CPUs)" },
	{ "bind", required_argument, 'b', IN_FILE_STRING | IN_FILE_LIST, "ADDR",
	  "listen on HOST:PORT, [V6ADDR]:PORT or unix:PATH; repeatable "
	  "(default: " DEFAULT_BIND ")" },
	{ "worker", required_argument, 'k', IN_FILE_STRING, "NAME|PATH",
	  "a built-in worker or a worker module .so, which each new worker "
	  "loads, so a reload runs the file on disk now "
	  "(default: " DEFAULT_WORKER ")" },
	{ "exec-type", required_argument, OPT_EXEC_TYPE, IN_FILE_STRING, "TYPE",
	  "-k exec: `exec` (default), ready once execve succeeded; `notify`, "
	  "ready on READY=1 over NOTIFY_SOCKET, alive while WATCHDOG=1 comes "
	  "within --worker-timeout" },
	{ "exec-stop-signal", required_argument, OPT_EXEC_STOP_SIGNAL,
	  IN_FILE_STRING, "SIG",
	  "-k exec: the signal of a graceful stop (default: TERM)" },
	{ "preload", no_argument, OPT_PRELOAD, IN_FILE_BOOL, NULL,
	  "the master loads the worker module once, before forking: faster "
	  "starts, but new module code then needs a restart" },
	/* A config file names no other config file, and asks for no help. */
	{ "config", required_argument, OPT_CONFIG, 0, "FILE",
	  "settings from a JSON file: {\"workers\": 4, ...}, one key per long "
	  "option; flags override it" },
	{ "worker-timeout", required_argument, OPT_WORKER_TIMEOUT,
	  IN_FILE_VALUE, "SEC",
	  "kill a worker silent this long (default: 30)" },
	{ "graceful-timeout", required_argument, OPT_GRACEFUL_TIMEOUT,
	  IN_FILE_VALUE, "SEC", "time a stopping worker gets (default: 30)" },
	{ "check-interval", required_argument, OPT_CHECK_INTERVAL,
	  IN_FILE_VALUE, "SEC",
	  "master check period and heartbeat (default: 1)" },
	{ "min-uptime", required_argument, OPT_MIN_UPTIME, IN_FILE_VALUE, "SEC",
	  "a worker living less counts as a failed start (default: 1)" },
	{ "max-restarts", required_argument, OPT_MAX_RESTARTS, IN_FILE_VALUE,
	  "N",
	  "stop the pool after more than N failed starts within "
	  "--restart-window (default: 0, never)" },
	{ "restart-window", required_argument, OPT_RESTART_WINDOW,
	  IN_FILE_VALUE, "SEC", "(default: 60)" },
	{ "max-requests", required_argument, OPT_MAX_REQUESTS, IN_FILE_VALUE,
	  "N", "replace a worker after N requests (default: 0, never)" },
	{ "max-requests-jitter", required_argument, OPT_MAX_REQUESTS_JITTER,
	  IN_FILE_VALUE, "N",
	  "plus up to N more, drawn per worker (default: 0)" },
	{ "max-lifetime", required_argument, OPT_MAX_LIFETIME, IN_FILE_VALUE,
	  "SEC", "replace a worker after this long (default: 0, never)" },
	{ "max-rss", required_argument, OPT_MAX_RSS, IN_FILE_VALUE, "MIB",
	  "replace a worker whose RSS passes MIB (default: 0, never)" },
	{ "user", required_argument, OPT_USER, IN_FILE_VALUE, "NAME",
	  "workers run as this user (name or uid), with its own groups" },
	{ "group", required_argument, OPT_GROUP, IN_FILE_VALUE, "NAME",
	  "workers run with this group (name or gid)" },
	{ "daemon", no_argument, 'D', IN_FILE_BOOL, NULL,
	  "run in the background; the command exits 0 once the pool started, "
	  "1 if it failed" },
	{ "pidfile", required_argument, OPT_PIDFILE, IN_FILE_STRING, "PATH",
	  "write the master's pid there, locked; a second master with it "
	  "refuses to start" },
	{ "reuse-port", no_argument, OPT_REUSE_PORT, IN_FILE_BOOL, NULL,
	  "each worker listens on its own SO_REUSEPORT socket" },
	{ "reap-all", no_argument, OPT_REAP_ALL, IN_FILE_BOOL, NULL,
	  "reap every child of the master, as an init does (the default as "
	  "PID 1 or a child subreaper); else only its workers" },
	{ "log-level", required_argument, OPT_LOG_LEVEL, IN_FILE_STRING,
	  "LEVEL", "debug, info, warning or error (default: info)" },
	{ "log-format", required_argument, OPT_LOG_FORMAT, IN_FILE_STRING,
	  "FORMAT", "text or json (default: text)" },
	{ "log-file", required_argument, OPT_LOG_FILE, IN_FILE_STRING, "PATH",
	  "the master's log (default: stderr)" },
	{ "stdout", required_argument, OPT_STDOUT, IN_FILE_STRING, "PATH",
	  "worker stdout lines (default: the log)" },
	{ "stderr", required_argument, OPT_STDERR, IN_FILE_STRING, "PATH",
	  "worker stderr lines (default: the log)" },
	{ "control", required_argument, OPT_CONTROL, IN_FILE_STRING, "PATH",
	  "control socket for `forkpool ctl` (default: none)" },
	{ "check", no_argument, OPT_CHECK, 0, NULL,
	  "check the flags, the config file and the worker module, then exit "
	  "(0: usable, 2: not); binds and forks nothing" },
	{ "help", no_argument, 'h', 0, NULL, "show this help and exit" },
	{ "version", no_argument, 'V', 0, NULL, "show the version and exit" },
};

/* Where the help column starts, and the width it wraps at. */
#define HELP_COLUMN 29
#define HELP_WIDTH  78

/* Print `text` from column `at`, wrapped at word boundaries. */
static void print_wrapped(FILE *out, const char *text, int at)
{
	int col = at;

	while (*text != '\0') {
		int word = (int)strcspn(text, " ");

		if (col > HELP_COLUMN && col + 1 + word > HELP_WIDTH) {
			fprintf(out, "\n%*s", HELP_COLUMN, "");
			col = HELP_COLUMN;
		} else if (col > at || col > HELP_COLUMN) {
			fputc(' ', out);
			col++;
		}
		fwrite(text, 1, (size_t)word, out);
		col += word;
		text += word;
		text += strspn(text, " ");
	}
	fputc('\n', out);
}

void fpool__cli_usage(FILE *out)
{
	fputs("Usage: forkpool [OPTIONS] [-- WORKER-ARGS]\n"
	      "       forkpool ctl [--control PATH] [--json] COMMAND [ARGS] "
	      "(see ctl --help)\n"
	      "A pre-fork process pool: the master binds the listeners, forks "
	      "the workers\nand replaces any that die or hang.\n\nOptions:\n",
	      out);
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct cli_option *o = &cli_options[i];
		int n;

		if (o->id < OPT_FIRST)
			n = fprintf(out, "  -%c, --%s", o->id, o->name);
		else
			n = fprintf(out, "      --%s", o->name);
		if (o->arg != NULL)
			n += fprintf(out, " %s", o->arg);
		if (n + 1 > HELP_COLUMN) {
			fputc(' ', out);
			n++;
		} else {
			n += fprintf(out, "%*s", HELP_COLUMN - n, "");
		}
		print_wrapped(out, o->help, n);
	}
	fprintf(out,
		"\nSEC accepts fractions and a unit: 0.5, 250ms, 2s, 1.5m.\n"
		"Arguments after -- are handed to the worker (config file "
		"key: \"%s\").\n\n"
		"Built-in workers:\n",
		WORKER_ARGS_KEY);
	for (size_t i = 0; fpool__builtin_workers[i] != NULL; i++)
		fprintf(out, "  %-10s %s\n", fpool__builtin_workers[i]->name,
			fpool__builtin_workers[i]->description);
	fprintf(out,
		"  %-10s any program, given after --: its listeners on fds 3, "
		"4, ... (LISTEN_FDS),\n  %-10s readiness over NOTIFY_SOCKET "
		"(--exec-type notify), as under systemd\n",
		EXEC_WORKER, "");
	fputs("\nSignals to the master:\n"
	      "  TERM, QUIT  graceful stop: workers finish their work, then "
	      "exit\n"
	      "  INT         interrupt: workers stop at once\n"
	      "  HUP         rolling reload: each worker replaced, new one "
	      "ready first\n"
	      "  TTIN, TTOU  one worker more, one fewer\n"
	      "  USR1        reopen --log-file, --stdout, --stderr\n"
	      "  USR2        binary upgrade: re-execute the binary on disk, "
	      "same pid\n"
	      "Other signals are ignored, except KILL and STOP.\n\n"
	      "Exit status: 0 after a clean shutdown, 1 on a runtime error "
	      "(e.g. address\nin use), 2 on a usage error.\n",
	      out);
}

/* The state of one parse. */

const size_t fpool__cli_noptions = FPOOL_NELEM(cli_options);

const struct cli_option *fpool__cli_option_by_id(int id)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (cli_options[i].id == id)
			return &cli_options[i];
	return NULL;
}

const struct cli_option *fpool__cli_option_by_name(const char *name)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		if (strcmp(cli_options[i].name, name) == 0)
			return &cli_options[i];
	return NULL;
}

void fpool__cli_long_options(struct option *lo)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		lo[i] = (struct option){ cli_options[i].name,
					 cli_options[i].has_arg, NULL,
					 cli_options[i].id };
	lo[N_OPTIONS] = (struct option){ NULL, 0, NULL, 0 };
}

/*
 * The first pass: only --config (the last one wins, as for every flag),
 * --help and --version.  Errors are left for the second pass.
 */
