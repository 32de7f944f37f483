/*
 * Unit tests of the config file (--config FILE.json): a good file gives
 * the same settings as the equivalent flags, flags override the file
 * wherever --config is, and every kind of bad file is one usage error
 * naming the key or the line and column.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"
#include "unit.h"

static int setup(void **state)
{
	return tmp_setup_named(state, "forkpool.json");
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

/* Both NULL, or equal strings. */
static void assert_same_string(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_same_settings(const struct fpool_cli *a,
				 const struct fpool_cli *b)
{
	assert_int_equal(a->cfg.workers, b->cfg.workers);
	assert_true(a->cfg.worker_timeout == b->cfg.worker_timeout);
	assert_true(a->cfg.graceful_timeout == b->cfg.graceful_timeout);
	assert_true(a->cfg.check_interval == b->cfg.check_interval);
	assert_true(a->cfg.min_uptime == b->cfg.min_uptime);
	assert_int_equal(a->cfg.max_restarts, b->cfg.max_restarts);
	assert_true(a->cfg.restart_window == b->cfg.restart_window);
	assert_true(a->cfg.max_requests == b->cfg.max_requests);
	assert_true(a->cfg.max_requests_jitter == b->cfg.max_requests_jitter);
	assert_true(a->cfg.max_lifetime == b->cfg.max_lifetime);
	assert_int_equal(a->cfg.max_rss_mib, b->cfg.max_rss_mib);
	assert_same_string(a->cfg.user, b->cfg.user);
	assert_same_string(a->cfg.group, b->cfg.group);
	assert_int_equal(a->cfg.daemonize, b->cfg.daemonize);
	assert_same_string(a->cfg.pidfile, b->cfg.pidfile);
	assert_same_string(a->cfg.stdout_file, b->cfg.stdout_file);
	assert_same_string(a->cfg.stderr_file, b->cfg.stderr_file);
	assert_same_string(a->cfg.control_path, b->cfg.control_path);
	assert_same_string(a->worker, b->worker);
	assert_int_equal(a->log_level, b->log_level);
	assert_int_equal(a->log_format, b->log_format);
	assert_same_string(a->log_file, b->log_file);
	assert_int_equal(a->nbinds, b->nbinds);
	for (size_t i = 0; i < a->nbinds; i++)
		assert_same_string(a->binds[i], b->binds[i]);
	assert_int_equal(a->worker_argc, b->worker_argc);
	for (int i = 0; i <= a->worker_argc; i++)
		if (a->worker_argv[i] == NULL)
			assert_null(b->worker_argv[i]);
		else
			assert_string_equal(a->worker_argv[i],
					    b->worker_argv[i]);
	assert_int_equal(a->cfg.worker_argc, a->worker_argc);
	assert_ptr_equal(a->cfg.worker_argv, a->worker_argv);
}

/* Every key, as JSON numbers where they may be, and as the flags' text. */
static void test_same_as_flags(void **state)
{
	struct tmp *t = *state;
	struct fpool_cli file, flags;
	char err[512];

	write_file(t->path,
		   "// settings for the tests\n"
		   "{\n"
		   "  \"workers\": 3,\n"
		   "  \"bind\": [\"127.0.0.1:9000\", \"unix:/tmp/x.sock\"],\n"
		   "  \"worker\": \"./w.so\",\n"
		   "  \"worker-timeout\": 2.5,\n"
		   "  \"graceful-timeout\": \"250ms\",\n"
		   "  \"check-interval\": 0.1,\n"
		   "  \"min-uptime\": \"2s\",\n"
		   "  \"max-restarts\": 5,\n"
		   "  \"restart-window\": \"1.5m\",\n"
		   "  \"max-requests\": 1000,\n"
		   "  \"max-requests-jitter\": \"200\",\n"
		   "  \"max-lifetime\": 3600,\n"
		   "  \"max-rss\": 512,\n"
		   "  \"user\": \"root\",\n"
		   "  \"group\": 0,\n"
		   "  \"daemon\": true,\n"
		   "  \"pidfile\": \"/run/fp.pid\",\n"
		   "  \"log-level\": \"debug\",\n"
		   "  \"log-format\": \"json\",\n"
		   "  \"log-file\": \"/var/log/fp.log\",\n"
		   "  \"stdout\": \"/var/log/out.log\",\n"
		   "  \"stderr\": \"/var/log/err.log\",\n"
		   "  \"control\": \"/run/fp.sock\",\n"
		   "  \"worker-args\": [\"--hang-after\", 5]\n"
		   "}\n");
	assert_int_equal(PARSE(&file, err, "--config", t->path), 0);
	assert_int_equal(
		PARSE(&flags, err, "-w", "3", "-b", "127.0.0.1:9000", "--bind",
		      "unix:/tmp/x.sock", "-k", "./w.so", "--worker-timeout",
		      "2.5", "--graceful-timeout", "250ms", "--check-interval",
		      "0.1", "--min-uptime", "2s", "--max-restarts", "5",
		      "--restart-window", "1.5m", "--max-requests", "1000",
		      "--max-requests-jitter", "200", "--max-lifetime", "3600",
		      "--max-rss", "512", "--user", "root", "--group", "0",
		      "-D", "--pidfile", "/run/fp.pid", "--log-level", "debug",
		      "--log-format", "json", "--log-file", "/var/log/fp.log",
		      "--stdout", "/var/log/out.log", "--stderr",
		      "/var/log/err.log", "--control", "/run/fp.sock", "--",
		      "--hang-after", "5"),
		0);
	assert_same_settings(&file, &flags);
	assert_string_equal(file.config_file, t->path);
	assert_int_equal(file.cfg.workers, 3);
	assert_true(file.cfg.restart_window == 90.0);
	assert_true(file.cfg.max_requests == 1000);
	/* --daemon made the module path absolute, the worker's name too. */
	assert_string_equal(file.worker_argv[0], file.worker);
	assert_true(file.worker[0] == '/');
	assert_non_null(strstr(file.worker, "/w.so"));
	assert_string_equal(file.worker_argv[2], "5");
	fpool__cli_free(&file);
	fpool__cli_free(&flags);
}

static void test_flags_override(void **state)
{
	struct tmp *t = *state;
	struct fpool_cli o;
	char err[512];

	write_file(t->path, "{\"workers\": 2, \"bind\": \"127.0.0.1:9000\", "
			    "\"log-level\": \"error\", \"max-lifetime\": 60, "
			    "\"worker-args\": [\"--from-file\"]}");
	/* Flags win whether they come after --config or before it. */
	assert_int_equal(PARSE(&o, err, "--config", t->path, "-w", "5"), 0);
	assert_int_equal(o.cfg.workers, 5);
	assert_int_equal(o.log_level, FPOOL_LOG_ERROR);
	assert_int_equal(o.nbinds, 1);
	assert_string_equal(o.binds[0], "127.0.0.1:9000");
	assert_int_equal(o.worker_argc, 2);
	assert_string_equal(o.worker_argv[1], "--from-file");
	fpool__cli_free(&o);

	assert_int_equal(PARSE(&o, err, "-w", "5", "--max-lifetime", "0",
			       "--log-level", "info", "--config", t->path),
			 0);
	assert_int_equal(o.cfg.workers, 5);
	assert_true(o.cfg.max_lifetime == 0);
	assert_int_equal(o.log_level, FPOOL_LOG_INFO);
	fpool__cli_free(&o);

	/* --bind flags replace the file's list rather than add to it. */
	assert_int_equal(PARSE(&o, err, "--config=x", "-b", "127.0.0.1:1",
			       "--config", t->path, "-b", "unix:/tmp/y"),
			 0);
	assert_int_equal(o.nbinds, 2);
	assert_string_equal(o.binds[0], "127.0.0.1:1");
	assert_string_equal(o.binds[1], "unix:/tmp/y");
	fpool__cli_free(&o);

	/* Arguments after -- replace "worker-args", even none at all. */
	assert_int_equal(PARSE(&o, err, "--config", t->path, "--", "a", "b"),
			 0);
	assert_int_equal(o.worker_argc, 3);
	assert_string_equal(o.worker_argv[1], "a");
	assert_string_equal(o.worker_argv[2], "b");
	fpool__cli_free(&o);
	assert_int_equal(PARSE(&o, err, "--config", t->path, "--"), 0);
	assert_int_equal(o.worker_argc, 1);
	assert_null(o.worker_argv[1]);
	fpool__cli_free(&o);

	/* "daemon": false keeps the default; the flag turns it on. */
	write_file(t->path, "{\"daemon\": false}");
	assert_int_equal(PARSE(&o, err, "--config", t->path), 0);
	assert_false(o.cfg.daemonize);
	fpool__cli_free(&o);
	assert_int_equal(PARSE(&o, err, "--config", t->path, "-D"), 0);
	assert_true(o.cfg.daemonize);
	fpool__cli_free(&o);
}

/* An empty object changes nothing; --help skips the file. */
static void test_empty_and_help(void **state)
{
	struct tmp *t = *state;
	struct fpool_cli a, b;
	char err[512];

	write_file(t->path, " { } ");
	assert_int_equal(PARSE(&a, err, "--config", t->path), 0);
	assert_int_equal(PARSE(&b, err, "-b", "127.0.0.1:8080"), 0);
	assert_same_settings(&a, &b);
	fpool__cli_free(&a);
	fpool__cli_free(&b);
	assert_int_equal(PARSE(&a, err, "--config", "/nonexistent.json", "-h"),
			 0);
	assert_true(a.help);
	fpool__cli_free(&a);
}

/* Parse the file `text` and expect a usage error containing each of the
 * NULL-terminated strings. */
static void expect_error(struct tmp *t, const char *text, ...)
{
	struct fpool_cli o;
	char err[512];
	const char *want;
	va_list ap;

	write_file(t->path, text);
	assert_int_equal(
		PARSE(&o, err, "-b", "127.0.0.1:1", "--config", t->path), 2);
	assert_null(strchr(err, '\n'));
	if (strstr(err, "--config") == NULL || strstr(err, t->path) == NULL)
		fail_msg("file %s: '%s' names neither --config nor the path",
			 text, err);
	va_start(ap, text);
	while ((want = va_arg(ap, const char *)) != NULL)
		if (strstr(err, want) == NULL)
			fail_msg("file %s: message '%s' lacks '%s'", text, err,
				 want);
	va_end(ap);
}

static void test_syntax_errors(void **state)
{
	struct tmp *t = *state;

	expect_error(t, "{\"workers\": 2,}", "line 1, column 15",
		     "syntax error", NULL);
	expect_error(t, "{\n  \"workers\": 2\n  \"bind\": \"x\"\n}",
		     "line 3, column 3", NULL);
	expect_error(t, "{\n\t\"workers\": @\n}", "line 2, column 13",
		     "invalid char", NULL);
	/* Columns count characters, not bytes. */
	expect_error(t, "{\"w\u00e9\u00e9\": 1 2}", "line 1, column 11", NULL);
	expect_error(t, "{\"workers\": 2", "line 1, column 14",
		     "unexpected end of file", NULL);
	expect_error(t, "", "line 1, column 1", "unexpected end of file", NULL);
	expect_error(t, "{\"workers\": 2} {}", "line 1, column 16",
		     "trailing garbage", NULL);
	expect_error(t, "{\"bind\": \"a\\u0000b\"}", "NUL", NULL);
	/* Found by fuzz-config: a fault in the very first byte. */
	expect_error(t, ",[1, 22\f \f 3]\xfa", "line 1, column 1", NULL);
	expect_error(t, "{\"a\": 1\f\v12}", "line 1, column 10", NULL);
	expect_error(t, "{\"bind\": \"\xff\"}", "line 1", NULL);
	{
		/* Deep nesting is refused before any recursion. */
		char deep[300];

		memset(deep, '[', sizeof(deep) - 1);
		deep[sizeof(deep) - 1] = '\0';
		memcpy(deep, "{\"bind\": ", 9);
		expect_error(t, deep, "nested too deeply", NULL);
	}
}

static void test_structure_errors(void **state)
{
	struct tmp *t = *state;

	expect_error(t, "[1, 2]", "expected a JSON object", "an array", NULL);
	expect_error(t, "\"workers\"", "expected a JSON object", "a string",
		     NULL);
	expect_error(t, "{\"wrokers\": 2}", "unknown key \"wrokers\"", NULL);
	expect_error(t, "{\"workers\": 2, \"workers\": 3}",
		     "\"workers\" is given twice", NULL);
	expect_error(t, "{\"config\": \"other.json\"}", "\"config\"",
		     "cannot be set in a config file", NULL);
	expect_error(t, "{\"help\": true}", "\"help\"", NULL);
}

static void test_type_errors(void **state)
{
	struct tmp *t = *state;

	expect_error(t, "{\"workers\": [2]}", "key \"workers\"",
		     "expected a number or a string, got an array", NULL);
	expect_error(t, "{\"workers\": true}", "key \"workers\"",
		     "got true/false", NULL);
	expect_error(t, "{\"workers\": null}", "key \"workers\"", "got null",
		     NULL);
	expect_error(t, "{\"log-level\": 1}", "key \"log-level\"",
		     "expected a string, got a number", NULL);
	expect_error(t, "{\"bind\": {\"a\": 1}}", "key \"bind\"",
		     "expected a string or an array of strings", NULL);
	expect_error(t, "{\"bind\": [\"127.0.0.1:1\", 8080]}", "key \"bind\"",
		     "item 2", "expected a string, got a number", NULL);
	expect_error(t, "{\"daemon\": \"yes\"}", "key \"daemon\"",
		     "expected true or false", NULL);
	expect_error(t, "{\"daemon\": 1}", "key \"daemon\"", NULL);
	expect_error(t, "{\"worker-args\": \"--x\"}", "key \"worker-args\"",
		     "expected an array of strings", NULL);
	expect_error(t, "{\"worker-args\": [\"--x\", [1]]}",
		     "key \"worker-args\"", "item 2", NULL);
}

/* Values are judged by the same code as the flags' values. */
static void test_value_errors(void **state)
{
	struct tmp *t = *state;

	expect_error(t, "{\"workers\": 0}", "key \"workers\"", "'0'",
		     "whole number from 1 to", NULL);
	expect_error(t, "{\"workers\": -1}", "key \"workers\"", "'-1'", NULL);
	expect_error(t, "{\"workers\": 2.0}", "key \"workers\"", NULL);
	expect_error(t, "{\"workers\": 1e3}", "key \"workers\"", NULL);
	expect_error(t, "{\"workers\": \"abc\"}", "key \"workers\"", NULL);
	expect_error(t, "{\"worker-timeout\": 0}", "key \"worker-timeout\"",
		     "out of range", NULL);
	expect_error(t, "{\"worker-timeout\": \"5parsecs\"}",
		     "key \"worker-timeout\"", "not a duration", NULL);
	expect_error(t, "{\"bind\": \"example.com:80\"}", "key \"bind\"",
		     "example.com:80", NULL);
	expect_error(t, "{\"bind\": [\"127.0.0.1:1\", \"127.0.0.1\"]}",
		     "key \"bind\"", NULL);
	expect_error(t, "{\"log-level\": \"loud\"}", "key \"log-level\"",
		     "'loud'", NULL);
	expect_error(t, "{\"log-format\": \"xml\"}", "key \"log-format\"",
		     NULL);
	expect_error(t, "{\"worker\": \"\"}", "key \"worker\"", "empty", NULL);
	expect_error(t, "{\"log-file\": \"\"}", "key \"log-file\"", NULL);
	expect_error(t, "{\"max-restarts\": 1000001}", "key \"max-restarts\"",
		     NULL);
	expect_error(t, "{\"max-requests\": 1099511627777}",
		     "key \"max-requests\"", NULL);
	expect_error(t, "{\"max-rss\": -5}", "key \"max-rss\"", NULL);
	expect_error(t, "{\"max-lifetime\": \"never\"}", "key \"max-lifetime\"",
		     NULL);
	expect_error(t, "{\"user\": \"no-such-user-fpool\"}", "key \"user\"",
		     "no such user", NULL);
	expect_error(t, "{\"group\": \"no-such-group-fpool\"}", "key \"group\"",
		     "no such group", NULL);
	/* Paths are made absolute for "daemon": still named as keys. */
	expect_error(
		t,
		"{\"daemon\": true, \"control\": \"c/"
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
		"key \"control\"", "too long", NULL);
	/* A value with a newline still makes one line. */
	expect_error(t, "{\"log-level\": \"a\\nb\"}", "key \"log-level\"",
		     "'a?b'", NULL);
}

static void test_unreadable(void **state)
{
	struct tmp *t = *state;
	struct fpool_cli o;
	char err[512], path[160];

	snprintf(path, sizeof(path), "%s/missing.json", t->dir);
	assert_int_equal(PARSE(&o, err, "--config", path), 2);
	assert_non_null(strstr(err, "--config"));
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(ENOENT)));

	assert_int_equal(PARSE(&o, err, "--config", t->dir), 2);
	assert_non_null(strstr(err, t->dir));
	assert_non_null(strstr(err, strerror(EISDIR)));

	assert_int_equal(PARSE(&o, err, "--config", ""), 2);
	assert_non_null(strstr(err, "--config"));

	if (geteuid() != 0) { /* root reads anything */
		write_file(t->path, "{}");
		assert_int_equal(chmod(t->path, 0), 0);
		assert_int_equal(PARSE(&o, err, "--config", t->path), 2);
		assert_non_null(strstr(err, strerror(EACCES)));
	}
}

/* A file bigger than 1 MiB is refused before it is parsed. */
static void test_too_big(void **state)
{
	struct tmp *t = *state;
	size_t n = (1 << 20) + 16;
	char *big = malloc(n + 1);

	assert_non_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	expect_error(t, big, "too big", NULL);
	free(big);
}

/* The parser alone, as a fuzz target would call it. */
static void test_conf_parse(void **state)
{
	struct fpool__conf *c;
	struct fpool__conf_value v, item;
	char err[256];
	const char *text = "{\"a\": [\"x\", 2], \"b\": -1.5e3, \"c\": null}";

	(void)state;
	assert_int_equal(
		fpool__conf_parse(text, strlen(text), &c, err, sizeof(err)), 0);
	assert_int_equal(fpool__conf_size(c), 3);
	assert_string_equal(fpool__conf_key(c, 0, &v), "a");
	assert_int_equal(v.kind, FPOOL_CONF_ARRAY);
	assert_int_equal(v.nitems, 2);
	fpool__conf_item(&v, 1, &item);
	assert_int_equal(item.kind, FPOOL_CONF_NUMBER);
	assert_string_equal(item.text, "2");
	assert_string_equal(fpool__conf_key(c, 1, &v), "b");
	assert_string_equal(v.text, "-1.5e3");
	assert_string_equal(fpool__conf_key(c, 2, &v), "c");
	assert_int_equal(v.kind, FPOOL_CONF_NULL);
	fpool__conf_free(c);
	fpool__conf_free(NULL);

	/* Not NUL-terminated, and a NUL byte is a syntax error. */
	assert_int_equal(fpool__conf_parse("{}xyz", 2, &c, err, sizeof(err)),
			 0);
	fpool__conf_free(c);
	assert_int_equal(fpool__conf_parse("{}\0", 3, &c, err, sizeof(err)),
			 -EINVAL);
	assert_null(c);
	assert_non_null(strstr(err, "line 1, column 3"));
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, tmp_teardown)
	const struct CMUnitTest tests[] = {
		T(test_same_as_flags),	  T(test_flags_override),
		T(test_empty_and_help),	  T(test_syntax_errors),
		T(test_structure_errors), T(test_type_errors),
		T(test_value_errors),	  T(test_unreadable),
		T(test_too_big),	  cmocka_unit_test(test_conf_parse),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
