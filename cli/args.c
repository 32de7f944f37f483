/*
 * Parsing the forkpool command line and the --config file against the
 * option table (options.c): defaults < file < flags.
 *
 * Every setting, from a flag or from a key of the file, goes through the
 * same handler (set_option), so both are validated alike.  Every bad
 * value is reported as one line naming the flag (or the file and the key)
 * and the problem, and the caller exits with status 2 (a usage error).
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

struct cli_parser {
	struct fpool_cli *o;
	char *err;
	size_t errlen;
	bool binds_from_file;	/* a --bind flag replaces the file's list */
	const char **file_args; /* the file's "worker-args" */
	size_t nfile_args;
	bool have_file_args;
	bool in_file;	    /* applying the config file's keys */
	uint32_t from_file; /* bit (id - OPT_FIRST): set by the file */
};

static int usage_error(struct cli_parser *p, const char *fmt, ...)
	FPOOL_PRINTF(2, 3);

static int usage_error(struct cli_parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, p->errlen, fmt, ap);
	va_end(ap);
	return 2;
}

static int parse_seconds(struct cli_parser *p, const char *who, const char *arg,
			 double *out)
{
	int r = fpool__parse_duration(arg, out);

	if (r == -ERANGE)
		return usage_error(p,
				   "%s: '%s' is out of range (more than 0, "
				   "at most %.0f s)",
				   who, arg, FPOOL_MAX_DURATION);
	if (r != 0)
		return usage_error(p,
				   "%s: '%s' is not a duration (e.g. 30, "
				   "0.5, 250ms, 2s)",
				   who, arg);
	return 0;
}

/* "0", "0.0", "0s", "0ms", "0m": a duration of zero, meaning never. */
static bool is_zero_duration(const char *s)
{
	if (*s != '0')
		return false;
	while (*s == '0')
		s++;
	if (*s == '.') {
		if (s[1] != '0')
			return false;
		while (*++s == '0')
			;
	}
	return strcmp(s, "") == 0 || strcmp(s, "s") == 0 ||
	       strcmp(s, "ms") == 0 || strcmp(s, "m") == 0;
}

static int parse_count(struct cli_parser *p, const char *who, const char *arg,
		       unsigned min, unsigned max, unsigned *out)
{
	if (fpool__parse_uint(arg, min, max, out) != 0)
		return usage_error(p,
				   "%s: '%s' is not a whole number from %u "
				   "to %u",
				   who, arg, min, max);
	return 0;
}

static int take_path(struct cli_parser *p, const char *who, const char *arg,
		     const char **out)
{
	if (arg[0] == '\0')
		return usage_error(p, "%s: empty path", who);
	*out = arg;
	return 0;
}

/*
 * --user and --group: a name that exists now (checked here, so a typo
 * fails at once and not in every worker), or a numeric id, which need
 * not have a name (containers).
 */
static int take_account(struct cli_parser *p, const char *who, const char *arg,
			bool group, const char **out)
{
	char why[160];

	/* The lookup the pool makes (account.c), so a typo fails here, at
	 * once, and not in every worker. */
	if (fpool__account_lookup(arg, group, &(unsigned){ 0 }, why,
				  sizeof(why)) != 0)
		return usage_error(p, "%s: %s", who, why);
	*out = arg;
	return 0;
}

static int add_bind(struct cli_parser *p, const char *who, const char *arg)
{
	struct fpool_cli *o = p->o;
	struct fpool__addr a;
	const char *why = "invalid address";
	const char **v;

	if (fpool__addr_parse(arg, &a, &why) != 0)
		return usage_error(p,
				   "%s: '%s': %s (expected HOST:PORT, "
				   "[V6ADDR]:PORT or unix:PATH)",
				   who, arg, why);
	v = realloc(o->binds, (o->nbinds + 1) * sizeof(*v));
	if (v == NULL)
		return usage_error(p, "%s: out of memory", who);
	v[o->nbinds++] = arg;
	o->binds = v;
	return 0;
}

/*
 * Apply one setting, from a flag or from the config file: `who` names it
 * in messages ("--workers", or the file and the key), `arg` is its value
 * as text (NULL for a switch, which `on` sets or clears).  0 or 2.
 */
static int set_option(struct cli_parser *p, int id, const char *who,
		      const char *arg, bool on)
{
	struct fpool_cli *o = p->o;
	struct fpool_config *cfg = &o->cfg;
	int r = 0;

	/* Remember where the long options came from, for later messages. */
	if (id >= OPT_FIRST && id < OPT_FIRST + 32) {
		uint32_t bit = (uint32_t)1 << (id - OPT_FIRST);

		p->from_file =
			p->in_file ? p->from_file | bit : p->from_file & ~bit;
	}
	switch (id) {
	case 'w':
		if (fpool__parse_uint(arg, 1, FPOOL_MAX_WORKERS,
				      &cfg->workers) != 0)
			r = usage_error(p,
					"%s: '%s' is not a whole number from "
					"1 to %d",
					who, arg, FPOOL_MAX_WORKERS);
		break;
	case 'b':
		r = add_bind(p, who, arg);
		break;
	case 'k':
		if (arg[0] == '\0')
			r = usage_error(p, "%s: empty name", who);
		o->worker = arg;
		break;
	case OPT_EXEC_TYPE:
		if (strcmp(arg, "exec") == 0 || strcmp(arg, "notify") == 0)
			cfg->exec_notify = strcmp(arg, "notify") == 0;
		else
			r = usage_error(p,
					"%s: '%s' is not one of exec, notify",
					who, arg);
		break;
	case OPT_EXEC_STOP_SIGNAL: {
		int sig = fpool__signal_parse(arg);

		if (sig <= 0 || sig == SIGKILL || sig == SIGSTOP)
			r = usage_error(p,
					"%s: '%s' is not a signal to stop with",
					who, arg);
		else
			cfg->exec_stop_signal = sig;
		break;
	}
	case OPT_WORKER_TIMEOUT:
		r = parse_seconds(p, who, arg, &cfg->worker_timeout);
		break;
	case OPT_GRACEFUL_TIMEOUT:
		r = parse_seconds(p, who, arg, &cfg->graceful_timeout);
		break;
	case OPT_CHECK_INTERVAL:
		r = parse_seconds(p, who, arg, &cfg->check_interval);
		break;
	case OPT_MIN_UPTIME:
		r = parse_seconds(p, who, arg, &cfg->min_uptime);
		break;
	case OPT_MAX_RESTARTS:
		r = parse_count(p, who, arg, 0, MAX_RESTARTS,
				&cfg->max_restarts);
		break;
	case OPT_RESTART_WINDOW:
		r = parse_seconds(p, who, arg, &cfg->restart_window);
		break;
	case OPT_MAX_REQUESTS:
	case OPT_MAX_REQUESTS_JITTER:
		if (fpool__parse_u64(arg, 0, MAX_REQUESTS,
				     id == OPT_MAX_REQUESTS
					     ? &cfg->max_requests
					     : &cfg->max_requests_jitter) != 0)
			r = usage_error(p,
					"%s: '%s' is not a whole number from "
					"0 to %llu",
					who, arg,
					(unsigned long long)MAX_REQUESTS);
		break;
	case OPT_MAX_LIFETIME:
		if (is_zero_duration(arg))
			cfg->max_lifetime = 0;
		else
			r = parse_seconds(p, who, arg, &cfg->max_lifetime);
		break;
	case OPT_MAX_RSS:
		r = parse_count(p, who, arg, 0, MAX_RSS_MIB, &cfg->max_rss_mib);
		break;
	case OPT_USER:
		r = take_account(p, who, arg, false, &cfg->user);
		break;
	case OPT_GROUP:
		r = take_account(p, who, arg, true, &cfg->group);
		break;
	case OPT_LOG_LEVEL:
		if (fpool_log_level_parse(arg, &o->log_level) != 0)
			r = usage_error(p,
					"%s: '%s' is not one of debug, info, "
					"warning, error",
					who, arg);
		break;
	case OPT_LOG_FORMAT:
		if (fpool__log_format_parse(arg, &o->log_format) != 0)
			r = usage_error(p, "%s: '%s' is not one of text, json",
					who, arg);
		break;
	case OPT_LOG_FILE:
		r = take_path(p, who, arg, &o->log_file);
		break;
	case OPT_STDOUT:
		r = take_path(p, who, arg, &cfg->stdout_file);
		break;
	case OPT_STDERR:
		r = take_path(p, who, arg, &cfg->stderr_file);
		break;
	case OPT_CONTROL:
		r = take_path(p, who, arg, &cfg->control_path);
		if (r == 0 && strlen(arg) >= 100)
			r = usage_error(
				p, "%s: path too long for a unix socket", who);
		break;
	case OPT_PIDFILE:
		r = take_path(p, who, arg, &cfg->pidfile);
		break;
	case 'D':
		cfg->daemonize = on;
		break;
	case OPT_REUSE_PORT:
		cfg->reuse_port = on;
		break;
	case OPT_REAP_ALL:
		cfg->reap_all = on;
		break;
	case OPT_PRELOAD:
		o->preload = on;
		break;
	case OPT_CHECK:
		o->check = true;
		break;
	case OPT_CONFIG:
		break; /* read before every flag */
	case 'h':
		o->help = true;
		break;
	case 'V':
		o->version = true;
		break;
	default:
		r = usage_error(p, "%s: unknown option", who);
		break;
	}
	return r;
}

/* ---- The config file ---------------------------------------------------- */

/* "a number or a string", for a type error. */
static const char *expected(unsigned in_file)
{
	switch (in_file) {
	case IN_FILE_VALUE:
		return "a number or a string";
	case IN_FILE_STRING:
		return "a string";
	case IN_FILE_STRING | IN_FILE_LIST:
		return "a string or an array of strings";
	case IN_FILE_BOOL:
		return "true or false";
	}
	return "something else";
}

static bool kind_allowed(unsigned in_file, enum fpool__conf_kind kind)
{
	switch (kind) {
	case FPOOL_CONF_STRING:
		return in_file & IN_FILE_STRING;
	case FPOOL_CONF_NUMBER:
		return in_file & IN_FILE_NUMBER;
	case FPOOL_CONF_ARRAY:
		return in_file & IN_FILE_LIST;
	case FPOOL_CONF_BOOL:
		return in_file & IN_FILE_BOOL;
	default:
		return false;
	}
}

/* "worker-args": what goes after `--`, as strings (or numbers). */
static int file_worker_args(struct cli_parser *p, const char *who,
			    const struct fpool__conf_value *v)
{
	struct fpool__conf_value item;

	if (v->kind != FPOOL_CONF_ARRAY)
		return usage_error(p,
				   "%s: expected an array of strings, got %s",
				   who, fpool__conf_kind_name(v->kind));
	free(p->file_args);
	p->file_args = calloc(v->nitems + 1, sizeof(*p->file_args));
	if (p->file_args == NULL)
		return usage_error(p, "%s: out of memory", who);
	for (size_t i = 0; i < v->nitems; i++) {
		fpool__conf_item(v, i, &item);
		if (item.kind != FPOOL_CONF_STRING &&
		    item.kind != FPOOL_CONF_NUMBER)
			return usage_error(p,
					   "%s: item %zu: expected a string, "
					   "got %s",
					   who, i + 1,
					   fpool__conf_kind_name(item.kind));
		p->file_args[i] = item.text;
	}
	p->nfile_args = v->nitems;
	p->have_file_args = true;
	return 0;
}

/* Turn one key of the file into the option handler its flag uses. */
static int file_key(struct cli_parser *p, const char *key,
		    const struct fpool__conf_value *v)
{
	const struct cli_option *opt = fpool__cli_option_by_name(key);
	const char *path = p->o->config_file;
	struct fpool__conf_value item;
	char who[512];
	int r;

	snprintf(who, sizeof(who), "--config %s: key \"%s\"", path, key);
	if (strcmp(key, WORKER_ARGS_KEY) == 0)
		return file_worker_args(p, who, v);
	if (opt == NULL)
		return usage_error(p, "--config %s: unknown key \"%s\"", path,
				   key);
	if (opt->in_file == 0)
		return usage_error(p,
				   "--config %s: key \"%s\" cannot be set in "
				   "a config file",
				   path, key);
	if (!kind_allowed(opt->in_file, v->kind))
		return usage_error(p, "%s: expected %s, got %s", who,
				   expected(opt->in_file),
				   fpool__conf_kind_name(v->kind));
	if (v->kind == FPOOL_CONF_BOOL)
		return set_option(p, opt->id, who, NULL, v->boolean);
	if (v->kind != FPOOL_CONF_ARRAY)
		return set_option(p, opt->id, who, v->text, true);
	for (size_t i = 0; i < v->nitems; i++) {
		fpool__conf_item(v, i, &item);
		if (item.kind != FPOOL_CONF_STRING)
			return usage_error(p,
					   "%s: item %zu: expected a string, "
					   "got %s",
					   who, i + 1,
					   fpool__conf_kind_name(item.kind));
		if ((r = set_option(p, opt->id, who, item.text, true)) != 0)
			return r;
	}
	return 0;
}

static int read_config(struct cli_parser *p, const char *path)
{
	struct fpool_cli *o = p->o;
	struct fpool__conf_value v;
	char why[256];
	int r;

	if (path[0] == '\0')
		return usage_error(p, "--config: empty path");
	o->config_file = path;
	if (fpool__conf_load(path, &o->conf, why, sizeof(why)) != 0)
		return usage_error(p, "--config %s: %s", path, why);
	for (size_t i = 0; i < fpool__conf_size(o->conf); i++) {
		const char *key = fpool__conf_key(o->conf, i, &v);

		p->in_file = true;
		r = file_key(p, key, &v);
		p->in_file = false;
		if (r != 0)
			return r;
	}
	p->binds_from_file = o->nbinds > 0;
	return 0;
}

/* ---- The command line ---------------------------------------------------- */

static const char *find_config(int argc, char **argv, const struct option *lo,
			       bool *help)
{
	const char *path = NULL;
	int c;

	*help = false;
	optind = 0; /* glibc: start afresh (the tests parse many times) */
	opterr = 0; /* we print our own one-line messages */
	while ((c = getopt_long(argc, argv, SHORT_OPTIONS, lo, NULL)) != -1) {
		if (c == OPT_CONFIG)
			path = optarg;
		else if (c == 'h' || c == 'V')
			*help = true;
	}
	return path;
}

static int take_worker_args(struct cli_parser *p, int n, char **args)
{
	struct fpool_cli *o = p->o;

	/* argv[0] of the worker is its name, as for a program. */
	free(o->worker_argv);
	o->worker_argv = calloc((size_t)n + 2, sizeof(char *));
	if (o->worker_argv == NULL)
		return usage_error(p, "out of memory");
	/* -k exec: what follows `--` is the program's own argv. */
	if (strcmp(o->worker, EXEC_WORKER) == 0) {
		if (n < 1)
			return usage_error(p, "--worker exec: give the program "
					      "after --, e.g. -k exec -- "
					      "python3 app.py");
		for (int i = 0; i < n; i++)
			o->worker_argv[i] = args[i];
		o->worker_argc = n;
		return 0;
	}
	o->worker_argv[0] = (char *)o->worker;
	for (int i = 0; i < n; i++)
		o->worker_argv[i + 1] = args[i];
	o->worker_argc = n + 1;
	return 0;
}

/* Keep s (malloc'd) until fpool__cli_free().  s, or NULL (and s freed). */
static char *own(struct fpool_cli *o, char *s)
{
	char **v;

	if (s == NULL)
		return NULL;
	v = realloc(o->owned, (o->nowned + 1) * sizeof(*v));
	if (v == NULL) {
		free(s);
		return NULL;
	}
	v[o->nowned++] = s;
	o->owned = v;
	return s;
}

/* How messages name option `id`: its flag, or the config file's key. */
static void origin(struct cli_parser *p, int id, bool from_file, char *buf,
		   size_t len)
{
	const struct cli_option *opt = fpool__cli_option_by_id(id);
	const char *name = opt != NULL ? opt->name : "?";

	if (from_file)
		snprintf(buf, len, "--config %s: key \"%s\"", p->o->config_file,
			 name);
	else
		snprintf(buf, len, "--%s", name);
}

/*
 * The daemon runs in "/" (chdir), and the pidfile, the log files and the
 * control socket are opened (or reopened, or removed) after that: make
 * the relative paths absolute while the current directory is known.
 */
static int absolute_paths(struct cli_parser *p)
{
	struct fpool_cli *o = p->o;
	const char *no_module = NULL;
	const char **paths[] = {
		&o->cfg.pidfile, &o->log_file, &o->cfg.stdout_file,
		&o->cfg.stderr_file, &o->cfg.control_path,
		/* Each reload loads it again, after the chdir. */
		fpool__module_is_path(o->worker) ? &o->worker : &no_module
	};
	const int ids[] = { OPT_PIDFILE, OPT_LOG_FILE, OPT_STDOUT,
			    OPT_STDERR,	 OPT_CONTROL,  'k' };
	char *cwd = getcwd(NULL, 0), *s, who[512];
	struct fpool__addr a;
	const char *why;
	int r = 0;

	if (cwd == NULL)
		return usage_error(p,
				   "--daemon: cannot tell the current "
				   "directory, to make paths absolute: %s",
				   strerror(errno));
	for (size_t i = 0; i < FPOOL_NELEM(paths) && r == 0; i++) {
		if (*paths[i] == NULL || (*paths[i])[0] == '/')
			continue;
		origin(p, ids[i],
		       ids[i] >= OPT_FIRST &&
			       (p->from_file >> (ids[i] - OPT_FIRST) & 1),
		       who, sizeof(who));
		if (asprintf(&s, "%s/%s", cwd, *paths[i]) < 0)
			s = NULL;
		if ((*paths[i] = own(o, s)) == NULL)
			r = usage_error(p, "%s: out of memory", who);
		else if (ids[i] == OPT_CONTROL && strlen(s) >= 100)
			r = usage_error(p,
					"%s: path too long for a unix socket "
					"once made absolute for --daemon: "
					"'%s'",
					who, s);
	}
	origin(p, 'b', p->binds_from_file, who, sizeof(who));
	for (size_t i = 0; i < o->nbinds && r == 0; i++) {
		const char *b = o->binds[i];

		if (strncmp(b, "unix:", 5) != 0 || b[5] == '/')
			continue;
		if (asprintf(&s, "unix:%s/%s", cwd, b + 5) < 0)
			s = NULL;
		if ((o->binds[i] = own(o, s)) == NULL)
			r = usage_error(p, "%s: out of memory", who);
		else if (fpool__addr_parse(s, &a, &why) != 0)
			r = usage_error(p,
					"%s: '%s' made absolute for --daemon: "
					"%s",
					who, s, why);
	}
	free(cwd);
	return r;
}

/* One line: a value from the file may hold a newline or a tab. */
static void one_line(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

int fpool__cli_parse(int argc, char **argv, struct fpool_cli *o, char *err,
		     size_t errlen)
{
	struct cli_parser p = { .o = o, .err = err, .errlen = errlen };
	struct option lo[N_OPTIONS + 1];
	const struct cli_option *opt;
	const char *config;
	char who[64];
	bool help;
	int c, r = 0;

	memset(o, 0, sizeof(*o));
	fpool_config_init(&o->cfg);
	o->worker = DEFAULT_WORKER;
	o->log_level = FPOOL_LOG_INFO;
	err[0] = '\0';
	fpool__cli_long_options(lo);

	/* Defaults < the config file < flags, wherever --config is. */
	config = find_config(argc, argv, lo, &help);
	if (config != NULL && !help && (r = read_config(&p, config)) != 0)
		goto fail;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, SHORT_OPTIONS, lo, NULL)) != -1) {
		if (c == ':') {
			r = usage_error(&p, "%s: missing value",
					argv[optind - 1]);
		} else if (c == '?') {
			if (optopt != 0)
				r = usage_error(&p, "unknown option '-%c'",
						optopt);
			else
				r = usage_error(&p, "unknown option '%s'",
						argv[optind - 1]);
		} else {
			opt = fpool__cli_option_by_id(c);
			snprintf(who, sizeof(who), "--%s",
				 opt != NULL ? opt->name : "?");
			/* Flags replace the file's list of addresses. */
			if (c == 'b' && p.binds_from_file) {
				o->nbinds = 0;
				p.binds_from_file = false;
			}
			r = set_option(&p, c, who, optarg, true);
		}
		if (r != 0)
			goto fail;
	}
	if (optind < argc && strcmp(argv[optind - 1], "--") != 0) {
		r = usage_error(&p,
				"unexpected argument '%s' (worker arguments "
				"go after --)",
				argv[optind]);
		goto fail;
	}
	o->default_bind = o->nbinds == 0;
	if (o->nbinds == 0 && (r = add_bind(&p, "--bind", DEFAULT_BIND)) != 0)
		goto fail;
	/* Arguments after `--` replace the file's "worker-args". */
	if (p.have_file_args && !(optind > 0 && optind <= argc &&
				  strcmp(argv[optind - 1], "--") == 0))
		r = take_worker_args(&p, (int)p.nfile_args,
				     (char **)p.file_args);
	else
		r = take_worker_args(&p, argc - optind, argv + optind);
	if (r != 0)
		goto fail;
	if (o->cfg.daemonize && (r = absolute_paths(&p)) != 0)
		goto fail;
	if (strcmp(o->worker, EXEC_WORKER) != 0)
		o->worker_argv[0] =
			(char *)o->worker; /* made absolute, maybe */
	/* A numeric --user with no passwd entry has no primary group: the
	 * workers would keep the master's (root's), so one must be named. */
	if (o->cfg.user != NULL && fpool__all_digits(o->cfg.user) &&
	    o->cfg.group == NULL &&
	    getpwuid((uid_t)strtoul(o->cfg.user, NULL, 10)) == NULL) {
		r = usage_error(&p,
				"--user: uid %s has no passwd entry to take a "
				"group from; give --group too",
				o->cfg.user);
		goto fail;
	}
	o->cfg.worker_argc = o->worker_argc;
	o->cfg.worker_argv = o->worker_argv;
	free(p.file_args);
	return 0;
fail:
	one_line(err);
	free(p.file_args);
	fpool__cli_free(o);
	return r;
}

void fpool__cli_free(struct fpool_cli *o)
{
	free(o->binds);
	free(o->worker_argv);
	for (size_t i = 0; i < o->nowned; i++)
		free(o->owned[i]);
	free(o->owned);
	fpool__conf_free(o->conf);
	o->binds = NULL;
	o->worker_argv = NULL;
	o->owned = NULL;
	o->conf = NULL;
	o->nbinds = 0;
	o->nowned = 0;
	o->worker_argc = 0;
}
