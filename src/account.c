/*
 * Users and groups: --user and --group resolved once, in the master, so a
 * worker only has to switch (worker.c).  The command line checks names
 * with the same lookup, so a typo fails at once and not in every worker.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fpool-int.h"

int fpool__account_lookup(const char *spec, bool group, unsigned *id, char *why,
			  size_t whylen)
{
	const char *what = group ? "group" : "user";
	struct passwd *pw;
	struct group *gr;

	if (spec == NULL || spec[0] == '\0') {
		snprintf(why, whylen, "empty %s name", what);
		return -EINVAL;
	}
	if (fpool__all_digits(spec)) {
		/* A number need not have a name (containers); (uid_t)-1
		 * means "unchanged" to setuid() and friends. */
		if (fpool__parse_uint(spec, 0, UINT32_MAX - 1, id) != 0) {
			snprintf(why, whylen, "%s id '%s' is out of range",
				 what, spec);
			return -ERANGE;
		}
		return 0;
	}
	/* Not found is NULL with errno 0 or one of these (getpwnam(3)). */
	errno = 0;
	pw = group ? NULL : getpwnam(spec);
	gr = group ? getgrnam(spec) : NULL;
	if (pw == NULL && gr == NULL) {
		int err = errno;

		if (err != 0 && err != ENOENT && err != ESRCH && err != EBADF &&
		    err != EPERM) {
			snprintf(why, whylen, "cannot look up %s '%s': %s",
				 what, spec, strerror(err));
			return -err;
		}
		snprintf(why, whylen, "no such %s '%s'", what, spec);
		return -ENOENT;
	}
	*id = group ? (unsigned)gr->gr_gid : (unsigned)pw->pw_uid;
	return 0;
}

/*
 * The ids and groups a worker runs with.  The supplementary groups are
 * the user's own (getgrouplist(3), as initgroups(3) would set them) or,
 * for a uid without a passwd entry or a --group alone, just the one
 * group: never the master's (root's disk, shadow...).  A uid without an
 * entry and no --group is refused: it has no group to run with.
 */
int fpool__account_resolve(const char *user, const char *group,
			   struct fpool__account *a)
{
	const struct passwd *pw = NULL;
	char why[160];
	unsigned id;
	int err, n = 0;

	a->uid = (uid_t)-1;
	a->gid = (gid_t)-1;
	a->groups = NULL;
	a->ngroups = 0;
	if (user != NULL) {
		if ((err = fpool__account_lookup(user, false, &id, why,
						 sizeof(why))) != 0) {
			fpool_log(FPOOL_LOG_ERROR, "--user: %s", why);
			return -EINVAL;
		}
		a->uid = (uid_t)id;
		if ((pw = getpwuid(a->uid)) != NULL)
			a->gid = pw->pw_gid;
		else if (group == NULL) {
			fpool_log(FPOOL_LOG_ERROR,
				  "user %s has no passwd entry to take a group "
				  "from; name a group too",
				  user);
			return -EINVAL;
		}
	}
	if (group != NULL) {
		if ((err = fpool__account_lookup(group, true, &id, why,
						 sizeof(why))) != 0) {
			fpool_log(FPOOL_LOG_ERROR, "--group: %s", why);
			return -EINVAL;
		}
		a->gid = (gid_t)id;
	}
	if (a->gid == (gid_t)-1)
		return 0;
	if (pw != NULL && group == NULL) {
		/* The first call says how many there are. */
		getgrouplist(pw->pw_name, a->gid, NULL, &n);
		a->groups = calloc((size_t)(n > 0 ? n : 1), sizeof(*a->groups));
		if (a->groups == NULL)
			return -ENOMEM;
		if (n > 0 &&
		    getgrouplist(pw->pw_name, a->gid, a->groups, &n) >= 0) {
			a->ngroups = (size_t)n;
			return 0;
		}
		/* Could not list them: the primary group alone. */
	} else {
		a->groups = calloc(1, sizeof(*a->groups));
		if (a->groups == NULL)
			return -ENOMEM;
	}
	a->groups[0] = a->gid;
	a->ngroups = 1;
	return 0;
}

int fpool__account_switch(const struct fpool__account *a, const char *user,
			  char *why, size_t whylen)
{
	gid_t *have;
	int n, err;

	if (a->gid != (gid_t)-1 &&
	    (setgroups(a->ngroups, a->groups) < 0 || setgid(a->gid) < 0)) {
		err = errno;
		snprintf(why, whylen, "cannot switch to group %u: %s",
			 (unsigned)a->gid, strerror(err));
		return -err;
	}
	if (a->uid != (uid_t)-1 && setuid(a->uid) < 0) {
		err = errno;
		snprintf(why, whylen, "cannot switch to user %s (uid %u): %s",
			 user ? user : "?", (unsigned)a->uid, strerror(err));
		return -err;
	}
	/* Make sure there is no way back: real, effective and saved ids
	 * are the new ones, the groups are those asked for, and setuid(0)
	 * fails. */
	have = calloc(a->ngroups + 1, sizeof(*have));
	if (have == NULL) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	n = getgroups((int)a->ngroups + 1, have);
	err = (a->gid != (gid_t)-1 &&
	       (getgid() != a->gid || getegid() != a->gid ||
		n != (int)a->ngroups ||
		memcmp(have, a->groups, (size_t)n * sizeof(*have)) != 0)) ||
	      (a->uid != (uid_t)-1 &&
	       (getuid() != a->uid || geteuid() != a->uid ||
		(a->uid != 0 && setuid(0) == 0)));
	free(have);
	if (err) {
		snprintf(why, whylen,
			 "privileges still held after switching to user %s "
			 "group %u; refusing to run",
			 user ? user : "(unchanged)", (unsigned)a->gid);
		return -EPERM;
	}
	return 0;
}
