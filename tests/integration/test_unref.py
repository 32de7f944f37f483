"""fpool_worker_unref(): a worker's own event that is unref'd does not
hold its drain.  An idle worker with a 1 s persistent timer used to wait
for --graceful-timeout and its SIGKILL; unref'd, it stops at once on
SIGTERM.  A ref'd timer (the default) still holds the drain."""

import signal

import pytest

from fp.base import build_module

# A worker with one persistent 1 s timer, unref'd unless --ref (never
# unref'd) or --reref (unref'd, then ref'd again); it frees the timer in
# on_shutdown and says so.
TICKER = r"""
#include <string.h>
#include <event2/event.h>
#include <forkpool.h>

static struct event *tick;
static int keep_ref, reref;

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd; (void)what; (void)arg;
}

static int ticker_setup(struct fpool_worker *w, int argc, char **argv)
{
	(void)w;
	keep_ref = argc > 1 && strcmp(argv[1], "--ref") == 0;
	reref = argc > 1 && strcmp(argv[1], "--reref") == 0;
	return 0;
}

static int ticker_start(struct fpool_worker *w, void *arg)
{
	struct timeval tv = { 1, 0 };
	int r;

	(void)arg;
	tick = event_new(fpool_worker_base(w), -1, EV_PERSIST, tick_cb, NULL);
	if (tick == NULL || event_add(tick, &tv) != 0)
		return -1;
	if (!keep_ref && (r = fpool_worker_unref(w, tick)) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "unref: %s", fpool_strerror(r));
		return -1;
	}
	if (reref && (r = fpool_worker_ref(w, tick)) != 0) {
		fpool_log(FPOOL_LOG_ERROR, "ref: %s", fpool_strerror(r));
		return -1;
	}
	return 0;
}

static int ticker_main(struct fpool_worker *w, void *arg)
{
	(void)arg;
	return fpool_worker_loop(w);
}

static int ticker_shutdown(struct fpool_worker *w, void *arg)
{
	(void)arg;
	event_free(tick);
	fpool_log(FPOOL_LOG_INFO, "ticker %u drained", fpool_worker_id(w));
	return 0;
}

static const struct fpool_worker_def ticker = {
	.name = "ticker",
	.setup = ticker_setup,
	.on_start = ticker_start,
	.main = ticker_main,
	.on_shutdown = ticker_shutdown,
};
FPOOL_WORKER_MODULE(ticker);
"""


@pytest.fixture
def ticker(tmp_path):
    return build_module(tmp_path, "ticker", TICKER)


def test_an_unrefd_timer_does_not_hold_the_drain(forkpool, ticker):
    # 60 s: a worker the timer held would be SIGKILLed only after it, far
    # past the harness's timeout; the assertions read the log.
    m = forkpool("-w", "2", "-k", ticker, "--graceful-timeout", "60")
    pool = m.wait_pool(2)
    assert m.stop(signal.SIGTERM) == 0
    for slot, pid in pool.items():
        m.wait_log(rf"ticker {slot} drained", need_alive=False)
        m.wait_log(rf"worker {slot} pid {pid} exited with status 0", need_alive=False)
    assert not m.find(r"did not stop within"), m.describe()
    assert not m.find(r"SIGKILL"), m.describe()
    m.assert_tree_gone()


@pytest.mark.parametrize("how", ["--ref", "--reref"])
def test_a_refd_timer_still_holds_the_drain(forkpool, ticker, how):
    m = forkpool("-w", "1", "-k", ticker, "--graceful-timeout", "0.5", "--", how)
    pool = m.wait_pool(1)
    assert m.stop(signal.SIGTERM) == 0
    m.wait_log(rf"worker 0 pid {pool[0]} did not stop within .*sending SIGKILL",
               need_alive=False)
    m.wait_log(rf"worker 0 pid {pool[0]} killed by SIGKILL", need_alive=False)
    assert not m.find(r"ticker 0 drained"), m.describe()
