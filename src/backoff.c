/*
 * Restart backoff: how long a slot waits before its next start after a
 * run of failed starts.  The first two failures restart at once, so a
 * single crash or an operator's kill -9 heals immediately; after that the
 * wait doubles from 100 ms up to 10 s, so a crash loop settles to one fork
 * every 10 s instead of spinning (see DESIGN.md, "Restart policy").
 */
#include "fpool-int.h"

#define BACKOFF_FREE 2	  /* failed starts that restart at once */
#define BACKOFF_BASE 0.1  /* s, the first wait */
#define BACKOFF_CAP  10.0 /* s, the longest wait */

double fpool__backoff_delay(unsigned failed)
{
	double d = BACKOFF_BASE;
	unsigned k;

	if (failed <= BACKOFF_FREE)
		return 0;
	/* Doubling stops at the cap, so a huge count neither loops long nor
	 * overflows a shift. */
	for (k = failed - BACKOFF_FREE - 1; k > 0 && d < BACKOFF_CAP; k--)
		d *= 2;
	return d < BACKOFF_CAP ? d : BACKOFF_CAP;
}
