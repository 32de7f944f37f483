/*
 * The program's side of a binary upgrade (src/upgrade.c does the rest):
 * the path it re-executes, told at start, and the listeners a new image
 * is handed, matched against its --bind addresses as socket activation's
 * are (main.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/*
 * The path the program was started from, absolute, taken at start: an
 * upgrade runs the file found there later, which is the new binary once
 * it was renamed over the old one.  Not /proc/self/exe: that names the
 * inode running now, the old one.  Symbolic links are kept, not
 * resolved, so a link moved to a new release is followed too.
 */
char *fpool__cli_exe_path(const char *argv0, const char **why)
{
	const char *path;
	char *cwd, *s = NULL;

	*why = NULL;
	if (argv0 == NULL || argv0[0] == '\0') {
		*why = "argv[0] is empty";
		return NULL;
	}
	if (argv0[0] == '/')
		return strdup(argv0);
	if (strchr(argv0, '/') != NULL) {
		while (strncmp(argv0, "./", 2) == 0)
			argv0 += 2;
		if ((cwd = getcwd(NULL, 0)) == NULL) {
			*why = "cannot tell the current directory";
			return NULL;
		}
		if (asprintf(&s, "%s/%s", cwd, argv0) < 0)
			s = NULL;
		free(cwd);
		return s;
	}
	/* A bare name: the shell found it on PATH, as execvp() does. */
	path = getenv("PATH");
	while (path != NULL && *path != '\0') {
		size_t n = strcspn(path, ":");

		if (n > 0 &&
		    asprintf(&s, "%.*s/%s", (int)n, path, argv0) >= 0) {
			if (s[0] == '/' && access(s, X_OK) == 0)
				return s;
			free(s);
			s = NULL;
		}
		path += n + (path[n] == ':');
	}
	*why = "not found on PATH";
	return NULL;
}

int fpool__cli_adopt_listeners(struct fpool_pool *pool, struct fpool_cli *o,
			       struct fpool__state *st)
{
	size_t n = fpool__state_nlisteners(st);
	bool any = false;
	int r;

	for (size_t b = 0; b < o->nbinds; b++) {
		struct fpool__addr a;

		if (o->binds[b] == NULL ||
		    fpool__addr_parse(o->binds[b], &a, NULL) != 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			int fd = fpool__state_listener(st, i);

			if (fd < 0 || !fpool__listen_matches(fd, &a))
				continue;
			if ((r = fpool__state_take_listener(pool, st, i)) !=
			    0) {
				fprintf(stderr,
					"forkpool: handed-over listener %s: "
					"%s\n",
					o->binds[b], fpool_strerror(r));
				return 1;
			}
			o->binds[b] = NULL;
			any = true;
			break;
		}
	}
	/* No --bind: what was listened on stays so (the default address,
	 * or the sockets systemd passed at the first start). */
	for (size_t i = 0; o->default_bind && i < n; i++) {
		if (fpool__state_listener(st, i) < 0)
			continue;
		if ((r = fpool__state_take_listener(pool, st, i)) != 0) {
			fprintf(stderr, "forkpool: handed-over listener: %s\n",
				fpool_strerror(r));
			return 1;
		}
		any = true;
	}
	if (o->default_bind && any)
		o->nbinds = 0;
	return 0;
}
