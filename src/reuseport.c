/*
 * --reuse-port: each worker listens on a socket of its own, bound with
 * SO_REUSEPORT to the address of the master's, and the kernel spreads new
 * connections across them (by a hash of the connection) instead of letting
 * every worker race to accept from one shared queue.
 *
 * The master's socket only reserves the address (and its port, when port 0
 * was asked for): it is bound with SO_REUSEPORT but never listens, since a
 * listening socket in the group would get its share of connections and
 * nobody accepts on the master's.  Unix sockets have no SO_REUSEPORT
 * spreading; they stay shared.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fpool-int.h"

int fpool__reuseport_socket(const struct sockaddr *sa, socklen_t len,
			    int backlog, int *out)
{
	int one = 1, fd, err;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (sa->sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) <
		     0) ||
	    bind(fd, sa, len) < 0 || (backlog > 0 && listen(fd, backlog) < 0)) {
		err = -errno;
		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}
