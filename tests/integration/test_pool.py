"""The pool: exact size, every worker serves echo, the listeners are
inherited, the log format."""

import os
import threading

from fp.base import wait_for
from fp.logs import LOG_LINE_RE
from fp.net import EchoClient, assert_serves_alone, echo_roundtrip
from fp.proc import listen_inodes, owner_of_socket, server_side_inode, socket_inodes


def test_three_workers_are_exactly_three_children(forkpool):
    m = forkpool("-w", "3")
    pool = m.wait_pool(3)
    assert sorted(pool) == [0, 1, 2]
    assert m.children() == set(pool.values())
    m.wait_log(rf"listening on 127\.0\.0\.1:{m.port}\b")
    for slot, pid in pool.items():
        m.wait_log(rf"worker {slot} pid {pid} started")


def test_every_worker_holds_the_listener(forkpool):
    m = forkpool("-w", "3")
    pool = m.wait_pool(3)
    lis = listen_inodes(m.port)
    assert lis, f"nothing listens on port {m.port}"
    for slot, pid in pool.items():
        assert lis <= socket_inodes(pid), (
            f"worker {slot} pid {pid} does not hold the listener (inodes {sorted(lis)})")


def test_many_concurrent_connections_all_echo(forkpool):
    m = forkpool("-w", "3")
    m.wait_pool(3)
    errors = []
    clients = [EchoClient(("127.0.0.1", m.port)) for _ in range(30)]
    try:
        def talk(i, c):
            try:
                for round_ in range(3):
                    c.echo(f"client {i} round {round_}\n".encode())
            except Exception as e:  # reported below, with the client number
                errors.append(f"client {i}: {e!r}")
        threads = [threading.Thread(target=talk, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "some clients never finished"
        assert not errors, errors
        # Who served them: every connection is held by one of the workers.
        pool = m.pool_state(3)
        assert pool, "the pool changed while serving"
        for c in clients:
            inode = wait_for(lambda: server_side_inode(c.sock, m.port))
            assert owner_of_socket(inode, pool.values()), "a connection no worker holds"
    finally:
        for c in clients:
            c.close()


def test_large_payload_echoes_intact(forkpool):
    m = forkpool("-w", "2")
    m.wait_pool(2)
    payload = os.urandom(4 << 20)
    with EchoClient(("127.0.0.1", m.port)) as c:
        c.echo(payload, timeout=60)


def test_each_worker_serves_on_its_own(forkpool):
    m = forkpool("-w", "3")
    pool = m.wait_pool(3)
    for pid in pool.values():
        assert_serves_alone(m, pid, connections=3)
    assert m.pool_state(3) == pool, "stopping workers for a moment changed the pool"


def test_log_lines_have_the_documented_format(forkpool):
    m = forkpool("-w", "2")
    m.wait_pool(2)
    assert echo_roundtrip(("127.0.0.1", m.port))
    assert m.stop() == 0
    lines = m.err.lines()
    assert lines, "the master logged nothing"
    bad = [l for l in lines if not LOG_LINE_RE.match(l)]
    assert not bad, "lines not in the form '<time> <level> <origin>: <message>':\n" + "\n".join(bad)
    assert any(LOG_LINE_RE.match(l).group("origin") == "master" for l in lines)
    m.wait_log(r"shutdown complete")


def test_unix_socket_bind(forkpool, sock_path):
    # sock_path: short enough for sun_path (108 bytes), which pytest's
    # tmp_path may not be.
    m = forkpool("-w", "2", "-b", f"unix:{sock_path}", bind=False)
    m.wait_pool(2)
    assert echo_roundtrip(sock_path)
    assert m.stop() == 0
    assert not os.path.exists(sock_path), "the unix socket file was left behind"
