/*
 * The forkpool program's own declarations (cli/): what the command line,
 * the config file, `forkpool ctl` and the worker lookup share.  None of it
 * is in libforkpool; the program links the library and uses its internal
 * helpers (fpool-int.h) as well as the public API.
 */
#ifndef FPOOL_CLI_H
#define FPOOL_CLI_H

#include "fpool-int.h"

/* ---- conffile.c, options.c, module.c, ctl.c ---------------------------- */

/*
 * The config file (conffile.c), for the program: one JSON object whose keys
 * are the long flags' names.  The parsed file is kept: the strings handed
 * out point into it and live until fpool__conf_free().
 */
enum fpool__conf_kind {
	FPOOL_CONF_NULL,
	FPOOL_CONF_BOOL,
	FPOOL_CONF_NUMBER,
	FPOOL_CONF_STRING,
	FPOOL_CONF_ARRAY,
	FPOOL_CONF_OBJECT,
};
/* One value of the file. */
struct fpool__conf_value {
	enum fpool__conf_kind kind;
	const char *text; /* STRING: the string; NUMBER: as written */
	bool boolean;	  /* BOOL */
	size_t nitems;	  /* ARRAY: its length */
	const void *impl; /* the parser's node */
};
struct fpool__conf;
/* Parse len bytes of JSON text (no NUL needed).  0, or -EINVAL (syntax
 * error: "line L, column C: ..."; not an object; a key given twice;
 * nesting too deep; a string with NUL), -EFBIG or -ENOMEM, with one line
 * in err[] that does not name the file. */
int fpool__conf_parse(const char *text, size_t len, struct fpool__conf **out,
		      char *err, size_t errlen);
/* Read and parse a file.  As fpool__conf_parse(), or -errno with the
 * errno text in err[]. */
int fpool__conf_load(const char *path, struct fpool__conf **out, char *err,
		     size_t errlen);
/* Number of keys, and key i (in file order) with its value. */
size_t fpool__conf_size(const struct fpool__conf *c);
const char *fpool__conf_key(const struct fpool__conf *c, size_t i,
			    struct fpool__conf_value *v);
/* Item i of an ARRAY value. */
void fpool__conf_item(const struct fpool__conf_value *array, size_t i,
		      struct fpool__conf_value *out);
/* "a string", "an array"... for messages. */
const char *fpool__conf_kind_name(enum fpool__conf_kind kind);
void fpool__conf_free(struct fpool__conf *c);

/* What the command line (and the config file) asked for. */
struct fpool_cli {
	struct fpool_config cfg;
	const char **binds; /* --bind values, in order */
	size_t nbinds;
	const char *worker; /* --worker: a built-in name or a .so path */
	enum fpool_log_level log_level;
	enum fpool_log_format log_format;
	const char *log_file;	 /* NULL: stderr */
	const char *config_file; /* --config, or NULL */
	bool help, version;
	bool check;	   /* --check: validate, then exit */
	bool preload;	   /* --preload: the master loads the module */
	bool default_bind; /* no --bind given: binds holds the default */
	int worker_argc;   /* arguments after `--` (or "worker-args") */
	char **worker_argv;
	/* What the strings above may point into besides argv: the parsed
	 * config file, and paths made absolute for --daemon. */
	struct fpool__conf *conf;
	char **owned;
	size_t nowned;
};
/* Parse argv, and the --config file if one is named (defaults < file <
 * flags).  0, or 2 (a usage error) with one line in err[]. */
int fpool__cli_parse(int argc, char **argv, struct fpool_cli *o, char *err,
		     size_t errlen);
void fpool__cli_free(struct fpool_cli *o);
/* Print --help. */
void fpool__cli_usage(FILE *out);

/* ---- upgrade.c: the program's side of a binary upgrade ----------------- */

/* The program's path as started (argv[0] made absolute, or found on
 * PATH, symbolic links kept: an upgrade runs the file the path names
 * then), malloc'd; NULL when it cannot be told (*why says why). */
char *fpool__cli_exe_path(const char *argv0, const char **why);
/* The listeners a binary upgrade handed over serve the --bind addresses
 * they match, whose entries are cleared (with no --bind, every one is
 * used as given).  0, or 1 with a message. */
int fpool__cli_adopt_listeners(struct fpool_pool *pool, struct fpool_cli *o,
			       struct fpool__state *st);

/* Whether --worker names a module (a path, or NAME.so), not a built-in. */
bool fpool__module_is_path(const char *name);
/* Find a worker: a built-in name (cfg->worker), or a path to a worker
 * module (.so): cfg->worker_module, for each worker to load, or with
 * `preload` loaded here into cfg->worker (*handle gets the dlopen handle,
 * else NULL).  0, or -errno with one line in err[]. */
int fpool__module_find(const char *name, bool preload, struct fpool_config *cfg,
		       void **handle, char *err, size_t errlen);
/* Reading the config again on reload (reload.c). */
struct fpool__reload {
	int argc;
	char **argv; /* the command line, parsed again */
	char *cwd;   /* where it was given (--daemon moves), or NULL */
	struct fpool_cli *first; /* the start's parse: lives to the end */
	struct fpool_cli *cur;	 /* the last one applied (may be first) */
};
/* With --config, make every reload of `pool` read it again (the pool's
 * reconfigure hook).  0 or -errno. */
int fpool__reload_init(struct fpool__reload *r, struct fpool_pool *pool,
		       struct fpool_cli *o, int argc, char **argv);
void fpool__reload_free(struct fpool__reload *r);
/* `forkpool ctl ...` (argv[0] is "ctl").  Its exit status. */
int fpool__ctl_main(int argc, char **argv);
/* The built-in workers, NULL-terminated. */
extern const struct fpool_worker_def *const fpool__builtin_workers[];

/* ---- options.c and args.c: the option table and its parser ----------- */

enum {
	OPT_FIRST = 256,
	OPT_WORKER_TIMEOUT = OPT_FIRST,
	OPT_GRACEFUL_TIMEOUT,
	OPT_CHECK_INTERVAL,
	OPT_MIN_UPTIME,
	OPT_LOG_LEVEL,
	OPT_LOG_FORMAT,
	OPT_LOG_FILE,
	OPT_STDOUT,
	OPT_STDERR,
	OPT_CONTROL,
	OPT_CONFIG,
	OPT_MAX_RESTARTS,
	OPT_RESTART_WINDOW,
	OPT_MAX_REQUESTS,
	OPT_MAX_REQUESTS_JITTER,
	OPT_MAX_LIFETIME,
	OPT_MAX_RSS,
	OPT_USER,
	OPT_GROUP,
	OPT_PIDFILE,
	OPT_REUSE_PORT,
	OPT_REAP_ALL,
	OPT_PRELOAD,
	OPT_CHECK,
	OPT_EXEC_TYPE,
	OPT_EXEC_STOP_SIGNAL,
};

/* What a key of the config file may hold (0: not allowed in a file). */
enum {
	IN_FILE_STRING = 1,
	IN_FILE_NUMBER = 2,
	IN_FILE_LIST = 4, /* an array of strings (or one string) */
	IN_FILE_BOOL = 8,
};
#define IN_FILE_VALUE (IN_FILE_STRING | IN_FILE_NUMBER)

#define DEFAULT_BIND   "127.0.0.1:8080"
#define DEFAULT_WORKER "http"
/* --worker exec: the program and its arguments come after `--`. */
#define EXEC_WORKER "exec"

/* One option (options.c): its long name (also its key in the config
 * file), whether it takes a value, its short letter or OPT_ code, what
 * the config file may give for it, and its --help line. */
struct cli_option {
	const char *name;
	int has_arg;
	int id;
	unsigned in_file;
	const char *arg;
	const char *help;
};
extern const struct cli_option cli_options[];
extern const size_t fpool__cli_noptions;
#define N_OPTIONS     fpool__cli_noptions
#define SHORT_OPTIONS ":w:b:k:DhV"
/* The key of the config file for the worker's arguments (after `--`). */
#define WORKER_ARGS_KEY "worker-args"

/* Upper bounds of the recycling limits. */
#define MAX_RESTARTS ((unsigned)1000000)
#define MAX_REQUESTS ((uint64_t)1 << 40)
#define MAX_RSS_MIB  ((unsigned)1048576)

struct option;
const struct cli_option *fpool__cli_option_by_id(int id);
const struct cli_option *fpool__cli_option_by_name(const char *name);
/* getopt_long's table from ours (N_OPTIONS + 1 entries). */
void fpool__cli_long_options(struct option *lo);

#endif /* FPOOL_CLI_H */
