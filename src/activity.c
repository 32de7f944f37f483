/*
 * What the workers are doing (fpool_worker_set_activity()): one shared
 * mapping of a memfd with an entry for every possible slot id, where a
 * page per slot cost 1 MiB of the master's RSS with 256 workers.  Pages
 * become resident only when a slot's entry is first touched, so 256
 * workers cost 8 pages.  Each worker unmaps all but the page holding its
 * own entry (worker.c); the 31 neighbours it can still write are only
 * diagnostics, cleaned when read.  Without the mapping the pool runs, and
 * the logs just cannot say what a hung worker was doing.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fpool-int.h"

/* Bytes of the mapping: an entry for every possible slot id, in pages. */
static size_t activity_size(void)
{
	size_t page = fpool__page_size();
	size_t n = FPOOL_MAX_WORKERS * sizeof(struct fpool__shared);

	return (n + page - 1) / page * page;
}

/* ftruncate(fd, n), where RLIMIT_FSIZE may be below n: then EFBIG, and
 * the SIGXFSZ that comes with it (whose default ends the process) is
 * consumed.  0 or -1 with errno. */
static int memfd_size(int fd, size_t n)
{
	struct timespec zero = { 0, 0 };
	sigset_t xfsz, old;
	int r, err;

	sigemptyset(&xfsz);
	sigaddset(&xfsz, SIGXFSZ);
	sigprocmask(SIG_BLOCK, &xfsz, &old);
	r = ftruncate(fd, (off_t)n);
	err = errno;
	if (r < 0 && err == EFBIG)
		sigtimedwait(&xfsz, NULL, &zero);
	sigprocmask(SIG_SETMASK, &old, NULL);
	errno = err;
	return r;
}

struct fpool__shared *fpool__activity_map(size_t *len, int *fd)
{
	size_t n = activity_size();
	void *p;

	*len = 0;
	/* A memfd rather than an anonymous mapping: a binary upgrade hands
	 * its fd to the new image, which maps the very pages the workers
	 * still write (upgrade.c).  Without memfd_create (ENOSYS before
	 * Linux 3.17) the mapping is anonymous, and an upgraded master
	 * cannot see what the workers it inherited are doing. */
	*fd = memfd_create("forkpool-activity", MFD_CLOEXEC);
	if (*fd >= 0 && memfd_size(*fd, n) < 0) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "sizing the workers' activity memfd; an "
				 "anonymous mapping instead, which a binary "
				 "upgrade cannot hand over");
		close(*fd);
		*fd = -1;
	}
	if (*fd >= 0)
		p = mmap(NULL, n, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_NORESERVE, *fd, 0);
	else
		p = mmap(NULL, n, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "mmap of the workers' activity area; hung "
				 "workers' activity will not be logged");
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return NULL;
	}
	*len = n;
	return p;
}

struct fpool__shared *fpool__activity_adopt(int fd, size_t *len)
{
	size_t n = activity_size();
	struct stat st;
	void *p;

	*len = 0;
	/* The size is this build's: another one (FPOOL_MAX_WORKERS
	 * changed) is not used, rather than read past an entry. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (size_t)st.st_size != n) {
		fpool_log(FPOOL_LOG_WARNING,
			  "upgrade: the activity memfd (fd %d) is not this "
			  "version's; a fresh one is used",
			  fd);
		return NULL;
	}
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		 fd, 0);
	if (p == MAP_FAILED) {
		fpool__log_errno(FPOOL_LOG_WARNING, errno,
				 "upgrade: mmap of the activity memfd");
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
