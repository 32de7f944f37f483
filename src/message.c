/*
 * Messages between the master and its workers (include/forkpool.h,
 * "Messages"): one packet of the worker's channel each, FPOOL_CHAN_MESSAGE
 * and then the bytes, sent without waiting.  The channel's socket buffer
 * is the queue; a full one is -EAGAIN for the sender.  This file is the
 * master's side and the packet; src/worker.c reads them in the worker.
 */
#include <ctype.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fpool-int.h"

int fpool__message_send(int fd, const void *data, size_t len)
{
	char tag = FPOOL_CHAN_MESSAGE;
	struct iovec iov[2] = {
		{ .iov_base = &tag, .iov_len = 1 },
		{ .iov_base = (void *)data, .iov_len = len },
	};
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	ssize_t n;

	if (len > FPOOL_MESSAGE_MAX)
		return -EMSGSIZE;
	if (fd < 0)
		return -EBADF;
	do {
		/* MSG_NOSIGNAL: a peer gone is -EPIPE, not SIGPIPE. */
		n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	/* SOCK_SEQPACKET: all or nothing. */
	return (size_t)n == len + 1 ? 0 : -EMSGSIZE;
}

int fpool_pool_on_message(struct fpool_pool *pool, fpool_pool_message_cb cb,
			  void *arg)
{
	pool->message_cb = cb;
	pool->message_arg = arg;
	return 0;
}

/* To the current worker of slot s.  0 or -errno. */
static int send_slot(struct fpool__slot *s, const void *data, size_t len)
{
	struct fpool__proc *p = s->cur;
	int r;

	if (p == NULL || p->state == PROC_STOPPING)
		return -ENOENT;
	if (p->notify || s->pool->cfg.exec_program != NULL)
		return -EOPNOTSUPP;
	if (p->chan < 0)
		return -ENOENT; /* it closed its channel: exiting */
	r = fpool__message_send(p->chan, data, len);
	return r == -EPIPE || r == -ECONNRESET ? -ENOENT : r;
}

int fpool_pool_send(struct fpool_pool *pool, unsigned id, const void *data,
		    size_t len)
{
	unsigned sent = 0, full = 0;
	int r, err = -ENOENT;

	if (len > FPOOL_MESSAGE_MAX)
		return -EMSGSIZE;
	if (len > 0 && data == NULL)
		return -EINVAL;
	if (id != FPOOL_ALL_WORKERS) {
		if (id >= pool->nslots || pool->slots[id] == NULL)
			return -ENOENT;
		r = send_slot(pool->slots[id], data, len);
		return r == 0 ? 1 : r;
	}
	for (unsigned i = 0; i < pool->nslots; i++) {
		if (pool->slots[i] == NULL)
			continue;
		r = send_slot(pool->slots[i], data, len);
		if (r == 0)
			sent++;
		else if (r == -EAGAIN)
			full++;
		if (r != 0 && r != -ENOENT)
			err = r;
	}
	if (full > 0)
		fpool_log(FPOOL_LOG_WARNING,
			  "a message to every worker missed %u whose channel "
			  "is full (they do not read their messages)",
			  full);
	return sent > 0 ? (int)sent : err;
}

void fpool__message_received(struct fpool_pool *pool, unsigned id,
			     const void *data, size_t len)
{
	if (pool->message_cb != NULL) {
		pool->message_cb(pool, id, data, len, pool->message_arg);
	} else {
		/* No program to take it (the forkpool program): the log
		 * shows its start, made printable. */
		char text[201];
		size_t n = len < sizeof(text) - 1 ? len : sizeof(text) - 1;

		for (size_t i = 0; i < n; i++) {
			unsigned char c = ((const unsigned char *)data)[i];

			text[i] = isprint(c) ? (char)c : '.';
		}
		text[n] = '\0';
		fpool_log(FPOOL_LOG_INFO,
			  "worker %u: message (%zu bytes): %s%s", id, len, text,
			  n < len ? "..." : "");
	}
	fpool__events_message(pool, id, data, len);
}
