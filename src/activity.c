/*
 * What the workers are doing (fpool_worker_set_activity()): one shared
 * anonymous mapping with an entry for every possible slot id, where a
 * page per slot cost 1 MiB of the master's RSS with 256 workers.  Pages
 * become resident only when a slot's entry is first touched, so 256
 * workers cost 8 pages.  Each worker unmaps all but the page holding its
 * own entry (worker.c); the 31 neighbours it can still write are only
 * diagnostics, cleaned when read.  Without the mapping the pool runs, and
 * the logs just cannot say what a hung worker was doing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fpool-int.h"

struct fpool__shared *fpool__activity_map(size_t *len)
{
	size_t page = fpool__page_size();
	size_t n = FPOOL_MAX_WORKERS * sizeof(struct fpool__shared);
	void *p;

	n = (n + page - 1) / page * page;
	p = mmap(NULL, n, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "mmap of the workers' activity area; hung "
				 "workers' activity will not be logged");
		*len = 0;
		return NULL;
	}
	*len = n;
	return p;
}

void fpool__activity_read(const struct fpool__shared *e, char *buf, size_t len)
{
	char raw[sizeof(e->activity)];
	size_t n;
	char *clean;

	if (len == 0)
		return;
	buf[0] = '\0';
	if (e == NULL)
		return;
	/* The worker may be writing it right now: copy, bound, clean. */
	memcpy(raw, e->activity, sizeof(raw));
	raw[sizeof(raw) - 1] = '\0';
	clean = fpool__utf8_sanitize(raw, strlen(raw), false, &n);
	if (clean != NULL)
		snprintf(buf, len, "%s", clean);
	free(clean);
}
