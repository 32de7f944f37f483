/*
 * The master under systemd: sd_notify(3) messages (READY, STATUS,
 * RELOADING, STOPPING, MAINPID) and the watchdog keep-alive.
 *
 * Built with libsystemd (meson -Dsystemd=auto|enabled), the messages go
 * through sd_notify(); without it (-Dsystemd=disabled), or when the
 * library cannot be loaded, they are written to $NOTIFY_SOCKET here,
 * which is all sd_notify() does for a process that speaks for itself:
 * one datagram on a unix socket, whose name is a path, or an abstract
 * name when it starts with '@'.  So both builds speak to systemd alike.
 *
 * libsystemd is dlopen()ed when there is a NOTIFY_SOCKET to speak to,
 * not linked (a departure from linking it as meson's dependency()
 * would): linked, it and what it pulls in (libgcrypt, libgpg-error,
 * liblzma, libzstd, liblz4, libcap) cost every master about 0.9 MiB of
 * RSS, a quarter of the 4 MiB budget for a master of 256 workers, and a
 * master outside systemd never calls it.  systemd does the same for its
 * own optional libraries.
 *
 * Outside systemd (no NOTIFY_SOCKET) every function is a no-op.  A
 * message that cannot be sent never stops the pool: the first failure is
 * logged as a warning, later ones at debug level only, so a broken
 * socket cannot flood the log every watchdog period.
 *
 * There is one master per process, so the state is static.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#ifdef FPOOL_HAVE_LIBSYSTEMD
#include <dlfcn.h>
#include <systemd/sd-daemon.h>
#endif

#include "fpool-int.h"

/* How long a send may wait for room in a full notify socket. */
#define NOTIFY_WAIT_MS 100

static bool warned;		  /* a failure was logged as a warning */
static struct event *watchdog_ev; /* the WATCHDOG=1 timer, or NULL */
static char last_status[128];	  /* the STATUS= last sent, for dedup */

/* Say once that notifying failed; msg's first line names it. */
static void notify_failed(const char *msg, int err)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	size_t n = strcspn(msg, "\n");

	fpool__log_errno(warned ? FPOOL_LOG_DEBUG : FPOOL_LOG_WARNING, err,
			 "systemd: cannot send %.*s to NOTIFY_SOCKET=%s%s",
			 (int)n, msg, sock ? sock : "(unset)",
			 warned ? ""
				: " (the pool goes on; further failures "
				  "are logged at debug level)");
	warned = true;
}

/* NOTIFY_SOCKET's value as a unix socket address.  0, or -EAFNOSUPPORT
 * (e.g. "vsock:..." which only libsystemd speaks), -ENAMETOOLONG. */
static int notify_addr(const char *name, struct sockaddr_un *un, socklen_t *len)
{
	size_t n = strlen(name);

	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	if (name[0] == '@') {
		/* Abstract: a NUL, then the name; no terminating NUL. */
		if (n < 2)
			return -EINVAL;
		if (n > sizeof(un->sun_path))
			return -ENAMETOOLONG;
		memcpy(un->sun_path + 1, name + 1, n - 1);
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
		return 0;
	}
	if (name[0] != '/')
		return -EAFNOSUPPORT;
	if (n >= sizeof(un->sun_path))
		return -ENAMETOOLONG;
	memcpy(un->sun_path, name, n + 1);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/* One datagram to $NOTIFY_SOCKET (name), written here. */
static int notify_send_raw(const char *name, const char *msg)
{
	struct sockaddr_un un;
	socklen_t len;
	struct pollfd pfd;
	size_t n = strlen(msg);
	ssize_t sent;
	int fd, r;

	if ((r = notify_addr(name, &un, &len)) != 0)
		return r;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Connected, so poll() can tell when the receiver's queue has
	 * room again: the master's loop never blocks here for long. */
	if (connect(fd, (const struct sockaddr *)&un, len) < 0) {
		r = -errno;
		goto out;
	}
	for (int tries = 0;; tries++) {
		sent = send(fd, msg, n, MSG_NOSIGNAL);
		if (sent >= 0) {
			r = (size_t)sent == n ? 1 : -EMSGSIZE;
			break;
		}
		r = -errno;
		if (r == -EINTR)
			continue;
		if (r != -EAGAIN || tries > 0)
			break;
		pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, NOTIFY_WAIT_MS) <= 0)
			break; /* still full (or poll failed): -EAGAIN */
	}
out:
	close(fd);
	return r;
}

#ifdef FPOOL_HAVE_LIBSYSTEMD
/* sd_notify() from libsystemd, loaded on first use; NULL if it cannot be. */
static __typeof__(sd_notify) *sd_notify_fn;
static bool sd_loaded; /* tried to load it */

static void load_libsystemd(void)
{
	void *h;

	sd_loaded = true;
	h = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_LOCAL);
	if (h != NULL)
		*(void **)&sd_notify_fn = dlsym(h, "sd_notify");
	if (sd_notify_fn == NULL)
		fpool_log(FPOOL_LOG_INFO,
			  "systemd: cannot load libsystemd (%s); writing to "
			  "NOTIFY_SOCKET directly",
			  dlerror());
	/* The handle stays open: sd_notify is used until the end. */
}
#endif

/* One datagram to $NOTIFY_SOCKET.  1 sent, 0 no socket, or -errno. */
static int notify_send(const char *msg)
{
	const char *name = getenv("NOTIFY_SOCKET");

	if (name == NULL || name[0] == '\0')
		return 0;
#ifdef FPOOL_HAVE_LIBSYSTEMD
	if (!sd_loaded)
		load_libsystemd();
	if (sd_notify_fn != NULL)
		return sd_notify_fn(0, msg);
#endif
	return notify_send_raw(name, msg);
}

/* Send msg (lines of KEY=VALUE); log a failure. */
static void notify(const char *msg)
{
	int r = notify_send(msg);

	if (r < 0)
		notify_failed(msg, -r);
}

/* STATUS= text: "3/4 workers ready", then what else is going on. */
static void format_status(const struct fpool__counts *c, char *buf, size_t len)
{
	size_t at;

	snprintf(buf, len, "%u/%u workers ready", c->ready, c->target);
	at = strlen(buf);
	if (c->starting > 0 && at < len)
		at += (size_t)snprintf(buf + at, len - at, ", %u starting",
				       c->starting);
	if (c->backoff > 0 && at < len)
		at += (size_t)snprintf(buf + at, len - at, ", %u in backoff",
				       c->backoff);
	if (c->reloading && at < len)
		at += (size_t)snprintf(buf + at, len - at, ", reloading");
	if (c->stopping && at < len)
		snprintf(buf + at, len - at, ", stopping");
}

void fpool__notify_ready(const struct fpool__counts *c)
{
	char msg[256];

	format_status(c, last_status, sizeof(last_status));
	/* MAINPID: after --daemon this process is not the one systemd
	 * started (that needs NotifyAccess=all to be believed). */
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s\nMAINPID=%d",
		 last_status, (int)getpid());
	notify(msg);
}

void fpool__notify_status(const struct fpool__counts *c)
{
	char status[sizeof(last_status)], msg[sizeof(status) + 8];

	format_status(c, status, sizeof(status));
	if (strcmp(status, last_status) == 0)
		return; /* nothing new to say */
	memcpy(last_status, status, sizeof(status));
	snprintf(msg, sizeof(msg), "STATUS=%s", status);
	notify(msg);
}

void fpool__notify_reloading(void)
{
	struct timespec ts;
	char msg[128];

	/* systemd >= 253 (Type=notify-reload) wants the time of the
	 * reload request with RELOADING=1; older ones ignore it. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg),
		 "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000ULL);
	snprintf(last_status, sizeof(last_status), "reloading");
	notify(msg);
}

void fpool__notify_reloaded(void)
{
	notify("READY=1");
}

void fpool__notify_stopping(void)
{
	snprintf(last_status, sizeof(last_status), "stopping");
	notify("STOPPING=1\nSTATUS=stopping");
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify("WATCHDOG=1");
}

/* A decimal number in [1, max], all of s.  0 or -EINVAL. */
static int parse_env_u64(const char *s, unsigned long long max,
			 unsigned long long *out)
{
	unsigned long long v = 0;

	if (s == NULL || *s == '\0')
		return -EINVAL;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (max - (unsigned long long)(*s - '0')) / 10)
			return -EINVAL;
		v = v * 10 + (unsigned long long)(*s - '0');
	}
	if (v == 0)
		return -EINVAL;
	*out = v;
	return 0;
}

int fpool__notify_watchdog_start(struct event_base *base)
{
	const char *usec_s = getenv("WATCHDOG_USEC");
	const char *pid_s = getenv("WATCHDOG_PID");
	unsigned long long usec, pid;
	struct timeval tv;

	if (watchdog_ev != NULL || usec_s == NULL)
		return 0;
	if (pid_s != NULL) {
		if (parse_env_u64(pid_s, (unsigned long long)INT32_MAX, &pid) !=
		    0) {
			fpool_log(FPOOL_LOG_WARNING,
				  "systemd: WATCHDOG_PID='%s' is not a pid; "
				  "no watchdog keep-alive",
				  pid_s);
			return 0;
		}
		if ((pid_t)pid != getpid()) {
			fpool_log(FPOOL_LOG_INFO,
				  "systemd: the watchdog is for pid %llu, not "
				  "this master (pid %d); no keep-alive",
				  pid, (int)getpid());
			return 0;
		}
	}
	/* At least 2 ms, so half of it is not 0 (a busy loop). */
	if (parse_env_u64(usec_s, UINT64_MAX - 1, &usec) != 0 || usec < 2000) {
		fpool_log(FPOOL_LOG_WARNING,
			  "systemd: WATCHDOG_USEC='%s' is not a number of "
			  "microseconds (at least 2000); no watchdog "
			  "keep-alive",
			  usec_s);
		return 0;
	}
	tv.tv_sec = (time_t)(usec / 2 / 1000000);
	tv.tv_usec = (suseconds_t)(usec / 2 % 1000000);
	watchdog_ev = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
	if (watchdog_ev == NULL || event_add(watchdog_ev, &tv) != 0) {
		fpool_log(FPOOL_LOG_ERROR,
			  "systemd: cannot start the watchdog timer");
		if (watchdog_ev != NULL)
			event_free(watchdog_ev);
		watchdog_ev = NULL;
		return -ENOMEM;
	}
	fpool_log(FPOOL_LOG_INFO,
		  "systemd: watchdog every %.3f s (WATCHDOG_USEC=%llu)",
		  (double)usec / 2e6, usec);
	/* Tell systemd at once that we are alive and well. */
	notify("WATCHDOG=1");
	return 0;
}

void fpool__notify_watchdog_stop(void)
{
	if (watchdog_ev != NULL)
		event_free(watchdog_ev);
	watchdog_ev = NULL;
}

struct event *fpool__notify_watchdog_event(void)
{
	return watchdog_ev;
}
