/*
 * What the load clients (echo-load.c, ka-client.c) share: a monotonic
 * clock in seconds and a latency histogram of 1 us bins.
 */
#ifndef FPOOL_BENCH_LOAD_H
#define FPOOL_BENCH_LOAD_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define LAT_BINS 1000000 /* 1 us each, up to 1 s */

static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The p-th percentile (0..100) in ms of `total` latencies in `lat`. */
static inline double lat_percentile(const uint32_t *lat,
				    unsigned long long total, double p)
{
	unsigned long long want = (unsigned long long)(p / 100.0 * total);
	unsigned long long seen = 0;

	for (size_t i = 0; i < LAT_BINS; i++) {
		seen += lat[i];
		if (seen > want)
			return (double)i / 1000.0;
	}
	return 0;
}

#endif
