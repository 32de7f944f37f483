/*
 * The library's version and ABI number, as built (include/forkpool.h's
 * macros, which meson.build checks against the project version).
 */
#include "fpool-int.h"

const char *fpool_version(void)
{
	return FPOOL_VERSION;
}

unsigned fpool_abi_version(void)
{
	return FPOOL_ABI_VERSION;
}
