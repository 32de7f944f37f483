/*
 * Unit tests of the command line: defaults, every flag, worker arguments
 * after --, and the one-line usage errors (exit status 2).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <signal.h>

#include "cli.h"
#include "unit.h"

static void test_defaults(void **state)
{
	struct fpool_cli o;
	char err[256];
	char *argv[] = { "forkpool", NULL };

	(void)state;
	assert_int_equal(fpool__cli_parse(1, argv, &o, err, sizeof(err)), 0);
	assert_true(o.cfg.workers >= 1);
	assert_int_equal(o.nbinds, 1);
	assert_string_equal(o.binds[0], "127.0.0.1:8080");
	assert_string_equal(o.worker, "http");
	assert_true(o.cfg.worker_timeout == 30.0);
	assert_true(o.cfg.graceful_timeout == 30.0);
	assert_true(o.cfg.check_interval == 1.0);
	assert_int_equal(o.log_level, FPOOL_LOG_INFO);
	assert_int_equal(o.worker_argc, 1);
	assert_string_equal(o.worker_argv[0], "http");
	assert_null(o.worker_argv[1]);
	assert_int_equal(o.cfg.max_restarts, 0);
	assert_true(o.cfg.restart_window == 60.0);
	assert_true(o.cfg.max_requests == 0);
	assert_true(o.cfg.max_requests_jitter == 0);
	assert_true(o.cfg.max_lifetime == 0);
	assert_int_equal(o.cfg.max_rss_mib, 0);
	assert_null(o.cfg.user);
	assert_null(o.cfg.group);
	assert_false(o.cfg.daemonize);
	assert_null(o.cfg.pidfile);
	assert_null(o.config_file);
	fpool__cli_free(&o);
}

static void test_every_flag(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "-w", "3", "--bind", "[::1]:9000", "-b",
			       "unix:/tmp/x.sock", "-k", "./w.so",
			       "--worker-timeout", "2.5", "--graceful-timeout",
			       "250ms", "--check-interval", "0.1",
			       "--min-uptime", "2s", "--log-level", "debug",
			       "--", "--hang-after", "5"),
			 0);
	assert_int_equal(o.cfg.workers, 3);
	assert_int_equal(o.nbinds, 2);
	assert_string_equal(o.binds[0], "[::1]:9000");
	assert_string_equal(o.binds[1], "unix:/tmp/x.sock");
	assert_string_equal(o.worker, "./w.so");
	assert_true(o.cfg.worker_timeout == 2.5);
	assert_true(o.cfg.graceful_timeout == 0.25);
	assert_true(o.cfg.check_interval == 0.1);
	assert_true(o.cfg.min_uptime == 2.0);
	assert_int_equal(o.log_level, FPOOL_LOG_DEBUG);
	assert_int_equal(o.worker_argc, 3);
	assert_string_equal(o.worker_argv[0], "./w.so");
	assert_string_equal(o.worker_argv[1], "--hang-after");
	assert_string_equal(o.worker_argv[2], "5");
	assert_null(o.worker_argv[3]);
	assert_int_equal(o.cfg.worker_argc, 3);
	assert_ptr_equal(o.cfg.worker_argv, o.worker_argv);
	fpool__cli_free(&o);
}

/* The flags of restart intensity, recycling, privileges and daemon mode. */
static void test_hardening_flags(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--max-restarts", "1000000",
			       "--restart-window", "2m", "--max-requests",
			       "1099511627776", "--max-requests-jitter", "0",
			       "--max-lifetime", "1.5m", "--max-rss", "1048576",
			       "--user", "root", "--group", "root", "-D",
			       "--pidfile", "/run/fp.pid"),
			 0);
	assert_int_equal(o.cfg.max_restarts, 1000000);
	assert_true(o.cfg.restart_window == 120.0);
	assert_true(o.cfg.max_requests == (uint64_t)1 << 40);
	assert_true(o.cfg.max_requests_jitter == 0);
	assert_true(o.cfg.max_lifetime == 90.0);
	assert_int_equal(o.cfg.max_rss_mib, 1048576);
	assert_string_equal(o.cfg.user, "root");
	assert_string_equal(o.cfg.group, "root");
	assert_true(o.cfg.daemonize);
	assert_string_equal(o.cfg.pidfile, "/run/fp.pid");
	fpool__cli_free(&o);

	/* 0 is "never" for the limits; numeric ids need no name. */
	assert_int_equal(PARSE(&o, err, "--max-restarts", "0", "--max-requests",
			       "0", "--max-requests-jitter", "200",
			       "--max-lifetime", "0", "--max-rss", "0",
			       "--user", "4242", "--group", "4343", "--daemon"),
			 0);
	assert_int_equal(o.cfg.max_restarts, 0);
	assert_true(o.cfg.max_requests_jitter == 200);
	assert_true(o.cfg.max_lifetime == 0);
	assert_string_equal(o.cfg.user, "4242");
	assert_string_equal(o.cfg.group, "4343");
	assert_true(o.cfg.daemonize);
	fpool__cli_free(&o);
	for (size_t i = 0; i < 4; i++) {
		const char *zero[] = { "0s", "0.0", "0ms", "00" };

		assert_int_equal(
			PARSE(&o, err, "--max-lifetime", (char *)zero[i]), 0);
		assert_true(o.cfg.max_lifetime == 0);
		fpool__cli_free(&o);
	}
}

/* The daemon runs in /, so relative paths are made absolute first. */
static void test_daemon_absolute_paths(void **state)
{
	struct fpool_cli o;
	char err[256], cwd[1024], want[1200];

	(void)state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(PARSE(&o, err, "-D", "--pidfile", "fp.pid",
			       "--log-file", "log/fp.log", "--stdout",
			       "/abs/out", "-b", "unix:fp.sock", "-b",
			       "127.0.0.1:1", "-k", "./w.so"),
			 0);
	snprintf(want, sizeof(want), "%s/fp.pid", cwd);
	assert_string_equal(o.cfg.pidfile, want);
	snprintf(want, sizeof(want), "%s/log/fp.log", cwd);
	assert_string_equal(o.log_file, want);
	assert_string_equal(o.cfg.stdout_file, "/abs/out");
	snprintf(want, sizeof(want), "unix:%s/fp.sock", cwd);
	assert_string_equal(o.binds[0], want);
	assert_string_equal(o.binds[1], "127.0.0.1:1");
	fpool__cli_free(&o);
	/* Without -D they stay as given. */
	assert_int_equal(PARSE(&o, err, "--pidfile", "fp.pid"), 0);
	assert_string_equal(o.cfg.pidfile, "fp.pid");
	fpool__cli_free(&o);
}

static void test_help_version(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--help"), 0);
	assert_true(o.help);
	fpool__cli_free(&o);
	assert_int_equal(PARSE(&o, err, "-V"), 0);
	assert_true(o.version);
	fpool__cli_free(&o);
}

/* Each bad command line is a usage error whose message names the flag. */
static void test_usage_errors(void **state)
{
	static const struct {
		const char *flag, *value, *named;
	} bad[] = {
		{ "-w", "0", "--workers" },
		{ "-w", "-1", "--workers" },
		{ "-w", "abc", "--workers" },
		{ "-w", "99999999", "--workers" },
		{ "--workers", "", "--workers" },
		{ "-b", "127.0.0.1", "--bind" },
		{ "-b", "127.0.0.1:99999", "--bind" },
		{ "--bind", "example.com:80", "--bind" },
		{ "--worker-timeout", "0", "--worker-timeout" },
		{ "--worker-timeout", "abc", "--worker-timeout" },
		{ "--graceful-timeout", "-1", "--graceful-timeout" },
		{ "--check-interval", "1x", "--check-interval" },
		{ "--min-uptime", "nan", "--min-uptime" },
		{ "--log-level", "loud", "--log-level" },
		{ "-k", "", "--worker" },
		{ "--max-restarts", "-1", "--max-restarts" },
		{ "--max-restarts", "1000001", "--max-restarts" },
		{ "--max-restarts", "x", "--max-restarts" },
		{ "--restart-window", "0", "--restart-window" },
		{ "--restart-window", "1h", "--restart-window" },
		{ "--max-requests", "1099511627777", "--max-requests" },
		{ "--max-requests", "-5", "--max-requests" },
		{ "--max-requests", "99999999999999999999999",
		  "--max-requests" },
		{ "--max-requests-jitter", "1e3", "--max-requests-jitter" },
		{ "--max-requests-jitter", "", "--max-requests-jitter" },
		{ "--max-lifetime", "-1", "--max-lifetime" },
		{ "--max-lifetime", "0x", "--max-lifetime" },
		{ "--max-lifetime", "never", "--max-lifetime" },
		{ "--max-rss", "1048577", "--max-rss" },
		{ "--max-rss", "1.5", "--max-rss" },
		{ "--user", "no-such-user-fpool", "--user" },
		{ "--user", "", "--user" },
		{ "--user", "99999999999", "--user" },
		{ "--group", "no-such-group-fpool", "--group" },
		{ "--group", "", "--group" },
		{ "--pidfile", "", "--pidfile" },
		{ "--config", "", "--config" },
		{ "--config", "/nonexistent/forkpool.json", "--config" },
	};
	struct fpool_cli o;
	char err[256];

	(void)state;
	for (size_t i = 0; i < FPOOL_NELEM(bad); i++) {
		char *argv[] = { "forkpool", (char *)bad[i].flag,
				 (char *)bad[i].value, NULL };

		assert_int_equal(
			fpool__cli_parse(3, argv, &o, err, sizeof(err)), 2);
		if (strstr(err, bad[i].named) == NULL)
			fail_msg("%s %s: message '%s' does not name %s",
				 bad[i].flag, bad[i].value, err, bad[i].named);
		assert_null(strchr(err, '\n'));
	}
}

static void test_unknown_and_missing(void **state)
{
	struct fpool_cli o;
	char err[256];

	(void)state;
	assert_int_equal(PARSE(&o, err, "--frobnicate"), 2);
	assert_non_null(strstr(err, "--frobnicate"));
	assert_int_equal(PARSE(&o, err, "-z"), 2);
	assert_non_null(strstr(err, "-z"));
	assert_int_equal(PARSE(&o, err, "--workers"), 2);
	assert_non_null(strstr(err, "--workers"));
	assert_int_equal(PARSE(&o, err, "stray"), 2);
	assert_non_null(strstr(err, "stray"));
	assert_int_equal(PARSE(&o, err, "--pidfile"), 2);
	assert_non_null(strstr(err, "--pidfile"));
	assert_int_equal(PARSE(&o, err, "-D", "yes"), 2);
	assert_non_null(strstr(err, "yes"));
}

static void test_module_lookup(void **state)
{
	struct fpool_config cfg;
	void *handle;
	char err[256];

	(void)state;
	fpool_config_init(&cfg);
	assert_int_equal(fpool__module_find("echo", false, &cfg, &handle, err,
					    sizeof(err)),
			 0);
	assert_string_equal(cfg.worker->name, "echo");
	assert_null(cfg.worker_module);
	assert_null(handle);
	assert_int_equal(fpool__module_find("nope", false, &cfg, &handle, err,
					    sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "--worker"));
	/* A module is left to each worker to load (checked at run)... */
	assert_int_equal(fpool__module_find("/nonexistent/w.so", false, &cfg,
					    &handle, err, sizeof(err)),
			 0);
	assert_null(cfg.worker);
	assert_string_equal(cfg.worker_module, "/nonexistent/w.so");
	assert_null(handle);
	/* ...or, with --preload, loaded here at once. */
	assert_int_equal(fpool__module_find("/nonexistent/w.so", true, &cfg,
					    &handle, err, sizeof(err)),
			 -ENOEXEC);
	assert_non_null(strstr(err, "--worker: cannot load the worker module"));
	assert_non_null(strstr(err, "/nonexistent/w.so"));
	assert_null(cfg.worker);
	assert_null(cfg.worker_module);
	assert_true(fpool__module_is_path("w.so"));
	assert_true(fpool__module_is_path("./w"));
	assert_false(fpool__module_is_path("http"));
}

/* -k exec: what follows `--` is the program's own argv; the program is
 * found as execvp() would, or the lookup says why not. */
static void test_exec_worker(void **state)
{
	struct fpool_cli o;
	struct fpool_config cfg;
	char err[256], path[4096];
	void *handle;

	(void)state;
	assert_int_equal(PARSE(&o, err, "--exec-type", "notify",
			       "--exec-stop-signal", "QUIT", "-k", "exec", "--",
			       "sh", "-c", "exit 0"),
			 0);
	assert_int_equal(o.worker_argc, 3);
	assert_string_equal(o.worker_argv[0], "sh");
	assert_string_equal(o.worker_argv[2], "exit 0");
	assert_null(o.worker_argv[3]);
	assert_int_equal(o.cfg.exec_notify, 1);
	assert_int_equal(o.cfg.exec_stop_signal, SIGQUIT);
	cfg = o.cfg;
	assert_int_equal(fpool__module_find("exec", false, &cfg, &handle, err,
					    sizeof(err)),
			 0);
	assert_string_equal(cfg.exec_program, "sh");
	assert_null(cfg.worker);
	assert_null(cfg.worker_module);
	fpool__cli_free(&o);

	assert_int_not_equal(PARSE(&o, err, "-k", "exec"), 0);
	assert_non_null(strstr(err, "after --"));
	assert_int_not_equal(PARSE(&o, err, "--exec-type", "simple"), 0);
	assert_non_null(strstr(err, "--exec-type"));
	assert_int_not_equal(PARSE(&o, err, "--exec-stop-signal", "KILL"), 0);
	assert_non_null(strstr(err, "--exec-stop-signal"));

	assert_int_equal(fpool__exec_resolve("sh", path, sizeof(path)), 0);
	assert_non_null(strstr(path, "/sh"));
	assert_int_equal(fpool__exec_resolve("/bin/sh", path, sizeof(path)), 0);
	assert_string_equal(path, "/bin/sh");
	assert_int_equal(
		fpool__exec_resolve("no-such-program-fp14", path, sizeof(path)),
		-ENOENT);
	assert_int_equal(fpool__exec_resolve("/etc/passwd", path, sizeof(path)),
			 -EACCES);
	assert_int_equal(
		fpool__exec_resolve("/no/such/program", path, sizeof(path)),
		-ENOENT);
	assert_int_equal(fpool__exec_resolve("", path, sizeof(path)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_flag),
		cmocka_unit_test(test_hardening_flags),
		cmocka_unit_test(test_daemon_absolute_paths),
		cmocka_unit_test(test_help_version),
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_unknown_and_missing),
		cmocka_unit_test(test_module_lookup),
		cmocka_unit_test(test_exec_worker),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
