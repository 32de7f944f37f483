/*
 * The forkpool command line: `forkpool [OPTIONS] [-- WORKER-ARGS]`.
 *
 * Every bad value is reported as one line naming the flag and the problem,
 * and the caller exits with status 2 (a usage error).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpool-int.h"

enum {
	OPT_WORKER_TIMEOUT = 256,
	OPT_GRACEFUL_TIMEOUT,
	OPT_CHECK_INTERVAL,
	OPT_MIN_UPTIME,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_LOG_FILE,
	OPT_STDOUT,
	OPT_STDERR,
	OPT_CONTROL,
};

static const struct option long_options[] = {
	{ "workers", required_argument, NULL, 'w' },
	{ "bind", required_argument, NULL, 'b' },
	{ "worker", required_argument, NULL, 'k' },
	{ "worker-timeout", required_argument, NULL, OPT_WORKER_TIMEOUT },
	{ "graceful-timeout", required_argument, NULL, OPT_GRACEFUL_TIMEOUT },
	{ "check-interval", required_argument, NULL, OPT_CHECK_INTERVAL },
	{ "min-uptime", required_argument, NULL, OPT_MIN_UPTIME },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "log-format", required_argument, NULL, OPT_LOG_FORMAT },
	{ "log-file", required_argument, NULL, OPT_LOG_FILE },
	{ "stdout", required_argument, NULL, OPT_STDOUT },
	{ "stderr", required_argument, NULL, OPT_STDERR },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

#define DEFAULT_BIND   "127.0.0.1:8080"
#define DEFAULT_WORKER "echo"

void fpool__cli_usage(FILE *out)
{
	fprintf(out,
		"Usage: forkpool [OPTIONS] [-- WORKER-ARGS]\n"
		"       forkpool ctl [--control PATH] [--json] COMMAND [ARGS] "
		"(see ctl --help)\n"
		"A pre-fork process pool: the master binds the listeners, "
		"forks the workers\nand replaces any that die or hang.\n\n"
		"Options:\n"
		"  -w, --workers N            pool size, 1..%d "
		"(default: number of CPUs)\n"
		"  -b, --bind ADDR            listen on HOST:PORT, "
		"[V6ADDR]:PORT or unix:PATH;\n"
		"                             repeatable (default: %s)\n"
		"  -k, --worker NAME|PATH     a built-in worker or a worker "
		"module .so\n"
		"                             (default: %s)\n"
		"      --worker-timeout SEC   kill a worker silent this long "
		"(default: 30)\n"
		"      --graceful-timeout SEC time a stopping worker gets "
		"(default: 30)\n"
		"      --check-interval SEC   master check period and "
		"heartbeat (default: 1)\n"
		"      --min-uptime SEC       a worker living less counts as "
		"a failed start\n"
		"                             (default: 1)\n"
		"      --log-level LEVEL      debug, info, warning or error "
		"(default: info)\n"
		"      --log-format FORMAT    text or json (default: text)\n"
		"      --log-file PATH        the master's log (default: "
		"stderr)\n"
		"      --stdout PATH          worker stdout lines (default: "
		"the log)\n"
		"      --stderr PATH          worker stderr lines (default: "
		"the log)\n"
		"      --control PATH         control socket for `forkpool "
		"ctl` (default: none)\n"
		"  -h, --help                 show this help and exit\n"
		"  -V, --version              show the version and exit\n\n"
		"SEC accepts fractions and a unit: 0.5, 250ms, 2s, 1.5m.\n"
		"Arguments after -- are handed to the worker.\n\n"
		"Built-in workers:\n",
		FPOOL_MAX_WORKERS, DEFAULT_BIND, DEFAULT_WORKER);
	for (size_t i = 0; fpool__builtin_workers[i] != NULL; i++)
		fprintf(out, "  %-10s %s\n", fpool__builtin_workers[i]->name,
			fpool__builtin_workers[i]->description);
	fprintf(out,
		"\nSignals to the master:\n"
		"  TERM, QUIT  graceful stop: workers finish their work, "
		"then exit\n"
		"  INT         interrupt: workers stop at once\n"
		"  HUP         rolling reload: each worker replaced, new one "
		"ready first\n"
		"  TTIN, TTOU  one worker more, one fewer\n"
		"  USR1        reopen --log-file, --stdout, --stderr\n\n"
		"Exit status: 0 after a clean shutdown, 1 on a runtime error "
		"(e.g. address\nin use), 2 on a usage error.\n");
}

static int usage_error(char *err, size_t errlen, const char *fmt, ...)
	FPOOL_PRINTF(3, 4);

static int usage_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return 2;
}

static int parse_seconds(const char *flag, const char *arg, double *out,
			 char *err, size_t errlen)
{
	int r = fpool__parse_duration(arg, out);

	if (r == -ERANGE)
		return usage_error(err, errlen,
				   "--%s: '%s' is out of range (more than 0, "
				   "at most %.0f s)",
				   flag, arg, FPOOL_MAX_DURATION);
	if (r != 0)
		return usage_error(err, errlen,
				   "--%s: '%s' is not a duration (e.g. 30, "
				   "0.5, 250ms, 2s)",
				   flag, arg);
	return 0;
}

static int take_path(const char *flag, const char *arg, const char **out,
		     char *err, size_t errlen)
{
	if (arg[0] == '\0')
		return usage_error(err, errlen, "--%s: empty path", flag);
	*out = arg;
	return 0;
}

static int add_bind(struct fpool_cli *o, const char *arg, char *err,
		    size_t errlen)
{
	struct fpool__addr a;
	const char *why = "invalid address";
	const char **v;

	if (fpool__addr_parse(arg, &a, &why) != 0)
		return usage_error(err, errlen,
				   "--bind: '%s': %s (expected HOST:PORT, "
				   "[V6ADDR]:PORT or unix:PATH)",
				   arg, why);
	v = realloc(o->binds, (o->nbinds + 1) * sizeof(*v));
	if (v == NULL)
		return usage_error(err, errlen, "--bind: out of memory");
	v[o->nbinds++] = arg;
	o->binds = v;
	return 0;
}

static int take_worker_args(struct fpool_cli *o, int argc, char **argv,
			    int first, char *err, size_t errlen)
{
	int n = argc - first;

	/* argv[0] of the worker is its name, as for a program. */
	o->worker_argv = calloc((size_t)n + 2, sizeof(char *));
	if (o->worker_argv == NULL)
		return usage_error(err, errlen, "out of memory");
	o->worker_argv[0] = (char *)o->worker;
	for (int i = 0; i < n; i++)
		o->worker_argv[i + 1] = argv[first + i];
	o->worker_argc = n + 1;
	return 0;
}

int fpool__cli_parse(int argc, char **argv, struct fpool_cli *o, char *err,
		     size_t errlen)
{
	int c, r;

	memset(o, 0, sizeof(*o));
	fpool_config_init(&o->cfg);
	o->worker = DEFAULT_WORKER;
	o->log_level = FPOOL_LOG_INFO;
	err[0] = '\0';

	optind = 0; /* glibc: start afresh (the tests parse many times) */
	opterr = 0; /* we print our own one-line messages */
	while ((c = getopt_long(argc, argv, ":w:b:k:hV", long_options, NULL)) !=
	       -1) {
		r = 0;
		switch (c) {
		case 'w':
			r = fpool__parse_uint(optarg, 1, FPOOL_MAX_WORKERS,
					      &o->cfg.workers);
			if (r != 0)
				r = usage_error(err, errlen,
						"--workers: '%s' is not a "
						"whole number from 1 to %d",
						optarg, FPOOL_MAX_WORKERS);
			break;
		case 'b':
			r = add_bind(o, optarg, err, errlen);
			break;
		case 'k':
			if (optarg[0] == '\0')
				r = usage_error(err, errlen,
						"--worker: empty name");
			o->worker = optarg;
			break;
		case OPT_WORKER_TIMEOUT:
			r = parse_seconds("worker-timeout", optarg,
					  &o->cfg.worker_timeout, err, errlen);
			break;
		case OPT_GRACEFUL_TIMEOUT:
			r = parse_seconds("graceful-timeout", optarg,
					  &o->cfg.graceful_timeout, err,
					  errlen);
			break;
		case OPT_CHECK_INTERVAL:
			r = parse_seconds("check-interval", optarg,
					  &o->cfg.check_interval, err, errlen);
			break;
		case OPT_MIN_UPTIME:
			r = parse_seconds("min-uptime", optarg,
					  &o->cfg.min_uptime, err, errlen);
			break;
		case OPT_LOG_LEVEL:
			if (fpool_log_level_parse(optarg, &o->log_level) != 0)
				r = usage_error(err, errlen,
						"--log-level: '%s' is not one "
						"of debug, info, warning, "
						"error",
						optarg);
			break;
		case OPT_LOG_FORMAT:
			if (fpool__log_format_parse(optarg, &o->log_format) !=
			    0)
				r = usage_error(err, errlen,
						"--log-format: '%s' is not one "
						"of text, json",
						optarg);
			break;
		case OPT_LOG_FILE:
			r = take_path("log-file", optarg, &o->log_file, err,
				      errlen);
			break;
		case OPT_STDOUT:
			r = take_path("stdout", optarg, &o->cfg.stdout_file,
				      err, errlen);
			break;
		case OPT_STDERR:
			r = take_path("stderr", optarg, &o->cfg.stderr_file,
				      err, errlen);
			break;
		case OPT_CONTROL:
			r = take_path("control", optarg, &o->cfg.control_path,
				      err, errlen);
			if (r == 0 && strlen(optarg) >= 100)
				r = usage_error(err, errlen,
						"--control: path too long for "
						"a unix socket");
			break;
		case 'h':
			o->help = true;
			break;
		case 'V':
			o->version = true;
			break;
		case ':':
			r = usage_error(err, errlen, "%s: missing value",
					argv[optind - 1]);
			break;
		default:
			if (optopt != 0)
				r = usage_error(err, errlen,
						"unknown option '-%c'", optopt);
			else
				r = usage_error(err, errlen,
						"unknown option '%s'",
						argv[optind - 1]);
			break;
		}
		if (r != 0) {
			fpool__cli_free(o);
			return r;
		}
	}
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		r = usage_error(err, errlen,
				"unexpected argument '%s' (worker arguments "
				"go after --)",
				argv[optind]);
		fpool__cli_free(o);
		return r;
	}
	if (o->nbinds == 0 && (r = add_bind(o, DEFAULT_BIND, err, errlen)))
		goto fail;
	if ((r = take_worker_args(o, argc, argv, optind, err, errlen)) != 0)
		goto fail;
	o->cfg.worker_argc = o->worker_argc;
	o->cfg.worker_argv = o->worker_argv;
	return 0;
fail:
	fpool__cli_free(o);
	return r;
}

void fpool__cli_free(struct fpool_cli *o)
{
	free(o->binds);
	free(o->worker_argv);
	o->binds = NULL;
	o->worker_argv = NULL;
	o->nbinds = 0;
	o->worker_argc = 0;
}
