/*
 * Small helpers shared by the master and the workers: clocks, signal names,
 * wait statuses, hook lists and error text.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fpool-int.h"

double fpool__now(void)
{
	struct timespec ts;

	/* CLOCK_MONOTONIC cannot fail with a valid clock id. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double fpool__realtime(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

struct timeval fpool__tv(double seconds)
{
	struct timeval tv;

	if (seconds < 0)
		seconds = 0;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

const char *fpool__signame(int sig)
{
	static char buf[32];
	/* sigabbrev_np() is glibc 2.32+; it is there on every Linux we
	 * build for, and avoids a table of our own. */
	const char *abbrev = sigabbrev_np(sig);

	if (abbrev == NULL) {
		snprintf(buf, sizeof(buf), "signal %d", sig);
		return buf;
	}
	snprintf(buf, sizeof(buf), "SIG%s", abbrev);
	return buf;
}

int fpool__signals_default(int *sig)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	int result = 0;

	sigemptyset(&sa.sa_mask);
	/* KILL and STOP cannot be caught; glibc keeps 32 and 33 (below
	 * SIGRTMIN) for its threads and refuses them with EINVAL. */
	for (int s = 1; s <= SIGRTMAX; s++) {
		if (s == SIGKILL || s == SIGSTOP || (s >= 32 && s < SIGRTMIN))
			continue;
		if (sigaction(s, &sa, NULL) < 0 && result == 0) {
			result = -errno;
			*sig = s;
		}
	}
	return result;
}

void fpool__describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d",
			 WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by %s%s",
			 fpool__signame(WTERMSIG(status)),
			 WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(buf, len, "changed state (wait status 0x%x)", status);
}

int fpool__hooks_add(struct fpool__hooks *h, void (*fn)(void), void *arg)
{
	if (fn == NULL)
		return -EINVAL;
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 4;
		struct fpool__hook *v = realloc(h->v, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		h->v = v;
		h->cap = cap;
	}
	h->v[h->n].fn = fn;
	h->v[h->n].arg = arg;
	h->n++;
	return 0;
}

void fpool__hooks_free(struct fpool__hooks *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

/*
 * Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0.
 * Overlong forms, surrogates and code points past U+10FFFF are refused
 * (the Unicode Standard, table 3-7); yajl's own check lets them through.
 */
size_t fpool__utf8_seq(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (p[0] < 0x80)
		return 1;
	if (p[0] < 0xc2)
		return 0;
	if (p[0] < 0xe0) {
		len = 2;
	} else if (p[0] < 0xf0) {
		len = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] < 0xf5) {
		len = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if (p[i] < lo || p[i] > hi)
			return 0;
		lo = 0x80;
		hi = 0xbf;
	}
	return len;
}

bool fpool__utf8_valid(const char *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;
	size_t i = 0, n;

	while (i < len) {
		n = fpool__utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

char *fpool__utf8_sanitize(const char *s, size_t len, bool keep_nul,
			   size_t *outlen)
{
	/* Each bad byte becomes the 3 bytes of U+FFFD. */
	char *out = malloc(len * 3 + 1), *o = out;
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;

	if (out == NULL)
		return NULL;
	while (i < len) {
		n = p[i] == 0 && !keep_nul ? 0
					   : fpool__utf8_seq(p + i, len - i);
		if (n == 0) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, p + i, n);
		o += n;
		i += n;
	}
	*o = '\0';
	*outlen = (size_t)(o - out);
	return out;
}

/* Resident set size of a process in KiB, or -1. */
long fpool__rss_kib(pid_t pid)
{
	char path[64];
	long pages = -1, rss = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * (long)(fpool__page_size() / 1024);
}

size_t fpool__page_size(void)
{
	static size_t page;
	long v;

	if (page == 0) {
		v = sysconf(_SC_PAGESIZE);
		page = v > 0 ? (size_t)v : 4096; /* it cannot fail on Linux */
	}
	return page;
}

int fpool_utf8_valid(const char *s, size_t len)
{
	return fpool__utf8_valid(s, len);
}

const char *fpool_strerror(int err)
{
	if (err == 0)
		return "success";
	/* The one E2BIG of the library: fpool__config_copy(). */
	if (err == -E2BIG || err == E2BIG)
		return "the config sets fields this library does not know "
		       "(built against a newer forkpool.h)";
	return strerror(err < 0 ? -err : err);
}
