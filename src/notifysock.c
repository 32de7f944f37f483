/*
 * -k exec --exec-type notify, the master's side: each exec'd process gets
 * a datagram socket of the master's, bound to an abstract address of its
 * own, as its NOTIFY_SOCKET (sd_notify(3)).  What arrives there is about
 * that process alone, so a message sent by a process it started
 * (`systemd-notify --ready` in a shell script) counts for it even when
 * the sender has exited before the master reads the datagram: there is
 * no pid to match against the worker's descendants, and so no race.  The
 * credentials the kernel attaches (SO_PASSCRED) keep out other users: a
 * datagram is accepted from the worker's pid, or from a process of the
 * workers' user (or root); any other is dropped and counted.
 *
 * READY=1 and WATCHDOG=1 become the PEV_READY and PEV_HEARTBEAT events a
 * channel's "ready" and heartbeat are (proc.c), so the slot table stays
 * the only owner of state; STATUS= is the worker's activity (the shared
 * entry `ctl status` and the hung-worker log read); STOPPING=1 is
 * noted; everything else (RELOADING=1, MAINPID=, fds) is ignored, and
 * any fd received is closed.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fpool-int.h"

/* Datagrams read per callback, so one chatty worker cannot starve the
 * others. */
#define NOTIFY_BATCH 64
/* sd_notify messages are short; a longer one is cut (MSG_TRUNC). */
#define NOTIFY_MAX 4096
/* Room for the credentials and a few fds (closed at once). */
#define NOTIFY_CMSG \
	(CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(16 * sizeof(int)))

int fpool__notify_open(struct fpool__proc *p, char *addr, size_t len)
{
	static unsigned long seq;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, one = 1, n, err;
	socklen_t salen;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	/* Abstract (a leading NUL, unix(7)): no file to remove, gone with
	 * the socket.  Unique per master and process; after a binary
	 * upgrade (same pid, the counter afresh) an address an adopted
	 * worker still holds is in use, and the next one is taken. */
	for (int tries = 0;; tries++) {
		n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1,
			     "forkpool/%d/notify/%u/%lu", (int)getpid(),
			     p->slot->id, ++seq);
		salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				    (size_t)n);
		if (bind(fd, (struct sockaddr *)&sa, salen) == 0)
			break;
		if (errno != EADDRINUSE || tries >= 1000) {
			err = -errno;
			close(fd);
			return err;
		}
	}
	snprintf(addr, len, "@%s", sa.sun_path + 1);
	return fd;
}

/* Whether a datagram with these credentials may speak for p. */
static bool notify_trusted(const struct fpool__proc *p, const struct ucred *uc)
{
	const struct fpool_pool *pool = p->slot->pool;
	uid_t uid =
		pool->account.uid != (uid_t)-1 ? pool->account.uid : geteuid();

	if (uc == NULL)
		return false;
	return uc->pid == p->pid || uc->uid == uid || uc->uid == 0;
}

/* Close every fd a datagram carried (SCM_RIGHTS): we take none. */
static const struct ucred *notify_cmsgs(struct msghdr *mh)
{
	const struct ucred *uc = NULL;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c != NULL;
	     c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET)
			continue;
		if (c->cmsg_type == SCM_CREDENTIALS &&
		    c->cmsg_len >= CMSG_LEN(sizeof(struct ucred)))
			uc = (const struct ucred *)CMSG_DATA(c);
		else if (c->cmsg_type == SCM_RIGHTS) {
			size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int fds[16];

			if (nfd > 16)
				nfd = 16;
			memcpy(fds, CMSG_DATA(c), nfd * sizeof(int));
			for (size_t i = 0; i < nfd; i++)
				close(fds[i]);
		}
	}
	return uc;
}

/* Act on one accepted message: newline-separated VAR=VALUE lines. */
static void notify_handle(struct fpool__proc *p, char *buf, size_t n)
{
	struct fpool__slot *s = p->slot;
	bool ready = false, watchdog = false;

	buf[n] = '\0';
	for (char *line = buf, *next; line != NULL && *line != '\0';
	     line = next) {
		next = strchr(line, '\n');
		if (next != NULL)
			*next++ = '\0';
		if (strcmp(line, "READY=1") == 0)
			ready = true;
		else if (strcmp(line, "WATCHDOG=1") == 0)
			watchdog = true;
		else if (strncmp(line, "STATUS=", 7) == 0 && s->shm != NULL)
			snprintf(s->shm->activity, sizeof(s->shm->activity),
				 "%s", line + 7);
		else if (strcmp(line, "STOPPING=1") == 0)
			fpool_log(FPOOL_LOG_INFO,
				  "worker %u pid %d says it is stopping "
				  "(STOPPING=1)",
				  s->id, (int)p->pid);
		/* RELOADING=1, MAINPID=, FDSTORE=1...: not ours to act on. */
	}
	p->last_seen = fpool__now();
	if (ready && p->state == PROC_STARTING)
		s->pool->proc_event(s->pool, s, p, PEV_READY);
	else if (watchdog || ready)
		s->pool->proc_event(s->pool, s, p, PEV_HEARTBEAT);
}

void fpool__notify_read(struct fpool__proc *p, bool all)
{
	static char buf[NOTIFY_MAX + 1];
	union {
		char buf[NOTIFY_CMSG];
		struct cmsghdr align;
	} cm;

	for (int i = 0; (all || i < NOTIFY_BATCH) && p->chan >= 0; i++) {
		struct iovec iov = { .iov_base = buf, .iov_len = NOTIFY_MAX };
		struct msghdr mh = { .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = cm.buf,
				     .msg_controllen = sizeof(cm.buf) };
		const struct ucred *uc;
		ssize_t n = recvmsg(p->chan, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fpool__log_errno(
					FPOOL_LOG_WARNING, errno,
					"worker %u pid %d: reading its "
					"notify socket",
					p->slot->id, (int)p->pid);
			return;
		}
		uc = notify_cmsgs(&mh);
		if (!notify_trusted(p, uc)) {
			unsigned long k = ++p->slot->pool->notify_dropped;

			/* The 1st, 2nd, 4th, 8th...: a flood cannot flood
			 * the log. */
			if ((k & (k - 1)) != 0)
				continue;
			fpool_log(FPOOL_LOG_WARNING,
				  "worker %u pid %d: a notify message from "
				  "pid %d uid %d dropped (%lu so far)",
				  p->slot->id, (int)p->pid,
				  uc != NULL ? (int)uc->pid : -1,
				  uc != NULL ? (int)uc->uid : -1,
				  p->slot->pool->notify_dropped);
			continue;
		}
		if (n > NOTIFY_MAX)
			n = NOTIFY_MAX;
		notify_handle(p, buf, (size_t)n);
	}
}
