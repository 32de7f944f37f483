/*
 * What several unit tests share: a temporary directory with one file name
 * in it, as cmocka setup/teardown state, and PARSE() for the command line
 * parser.  Include after <cmocka.h> and "fpool-int.h".
 */
#ifndef FPOOL_TESTS_UNIT_H
#define FPOOL_TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* fpool__cli_parse() of "forkpool" and the arguments; its result. */
#define PARSE(o, err, ...)                                                \
	({                                                                \
		char *argv_[] = { "forkpool", __VA_ARGS__, NULL };        \
		fpool__cli_parse((int)FPOOL_NELEM(argv_) - 1, argv_, (o), \
				 (err), sizeof(err));                     \
	})

struct tmp {
	char dir[64];	/* a new directory under /tmp */
	char path[96];	/* dir/name, not created (fits a sun_path) */
	char addr[160]; /* "unix:" path */
};

/* A setup: *state becomes a struct tmp for a new directory and `name`. */
static inline int tmp_setup_named(void **state, const char *name)
{
	struct tmp *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -1;
	snprintf(t->dir, sizeof(t->dir), "/tmp/fpool-test-XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		perror("mkdtemp");
		free(t);
		return -1;
	}
	snprintf(t->path, sizeof(t->path), "%s/%s", t->dir, name);
	snprintf(t->addr, sizeof(t->addr), "unix:%s", t->path);
	*state = t;
	return 0;
}

/* The teardown: remove the file (if made) and the directory. */
static inline int tmp_teardown(void **state)
{
	struct tmp *t = *state;

	unlink(t->path);
	rmdir(t->dir);
	free(t);
	return 0;
}

#endif
