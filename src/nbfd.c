/*
 * Writing to a file descriptor without blocking, whatever it is and
 * whoever shares it (sink.c's queue sits on this).
 *
 * The master's stderr is shared with whoever started it: setting
 * O_NONBLOCK on it would change it for the shell too.  So a pipe, FIFO or
 * terminal is opened again through /proc/self/fd (a new open file
 * description of the same pipe, with flags of its own); a socket
 * (journald's stdout stream) is written with MSG_DONTWAIT; a regular file
 * never makes a writer wait for a reader.  Where /proc cannot reopen a
 * pipe, it is polled and written at most PIPE_BUF bytes at a time, which
 * a pipe that polls writable always takes without blocking (pipe(7)).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "fpool-int.h"

/* Records written in one writev() at most. */
#define NBFD_IOV 64

void fpool__nbfd_init(struct fpool__nbfd *f, int fd)
{
	struct stat st;
	char proc[64];
	int rfd;

	f->kind = FPOOL_FD_FILE;
	f->wfd = fd;
	if (fstat(fd, &st) < 0)
		return;
	if (S_ISSOCK(st.st_mode)) {
		f->kind = FPOOL_FD_SOCKET;
		return;
	}
	if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
		return;
	if (fcntl(fd, F_GETFL) & O_NONBLOCK) {
		f->kind = FPOOL_FD_STREAM; /* ours, opened O_NONBLOCK */
		return;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	rfd = open(proc, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (rfd >= 0) {
		f->kind = FPOOL_FD_STREAM;
		f->wfd = rfd;
		return;
	}
	/* /dev/null and the like never block; a pipe or FIFO gets polled. */
	f->kind = S_ISFIFO(st.st_mode) ? FPOOL_FD_POLLED : FPOOL_FD_FILE;
}

ssize_t fpool__nbfd_writev(const struct fpool__nbfd *f, struct evbuffer *b)
{
	struct evbuffer_iovec v[NBFD_IOV];
	struct iovec iov[NBFD_IOV];
	ssize_t limit = f->kind == FPOOL_FD_POLLED ? PIPE_BUF : -1, n;
	size_t total = 0;
	int cnt = evbuffer_peek(b, limit, NULL, v, NBFD_IOV);

	if (cnt > NBFD_IOV)
		cnt = NBFD_IOV;
	for (int i = 0; i < cnt; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
		if (limit > 0 && total + iov[i].iov_len > (size_t)limit) {
			iov[i].iov_len = (size_t)limit - total;
			cnt = i + 1;
		}
		total += iov[i].iov_len;
	}
	switch (f->kind) {
	case FPOOL_FD_SOCKET: {
		struct msghdr msg = { .msg_iov = iov,
				      .msg_iovlen = (size_t)cnt };

		n = sendmsg(f->wfd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		break;
	}
	case FPOOL_FD_POLLED: {
		struct pollfd pfd = { .fd = f->wfd, .events = POLLOUT };
		int r = poll(&pfd, 1, 0);

		if (r < 0)
			return -errno;
		if (r == 0 || !(pfd.revents & (POLLOUT | POLLERR | POLLHUP)))
			return -EAGAIN;
		n = writev(f->wfd, iov, cnt);
		break;
	}
	default:
		n = writev(f->wfd, iov, cnt);
		break;
	}
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n;
}

int fpool__nbfd_wait(const struct fpool__nbfd *f, double timeout)
{
	struct pollfd pfd = { .fd = f->wfd, .events = POLLOUT };
	int r;

	r = poll(&pfd, 1, timeout < 0 ? -1 : (int)(timeout * 1000));
	if (r < 0)
		return errno == EINTR ? 0 : -errno;
	return r == 0 ? -ETIMEDOUT : 0;
}

int fpool__nbfd_open_path(const char *path)
{
	int fd = open(path,
		      O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK |
			      O_NOCTTY,
		      0644);

	if (fd < 0)
		return -errno;
	return fd;
}

void fpool__nbfd_close(struct fpool__nbfd *f, int fd)
{
	if (f->wfd >= 0 && f->wfd != fd)
		close(f->wfd);
	f->wfd = fd;
	f->kind = FPOOL_FD_FILE;
}
