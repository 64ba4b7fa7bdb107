"""A backlog of 100,000 queued QoS 1 messages across 10 persistent sessions
restores intact after a restart.

All ten sessions subscribe to one topic, so 10,000 published messages make
100,000 queue entries (10,000 stored messages), which keeps publishing quick.
"""

import threading

from harness import V5, V311, Client, assert_sequence, seqs_of

SESSIONS = 10
PER_SESSION = 10_000


def session_kw(i):
    # Half MQTT 3.1.1, half MQTT 5.
    if i % 2:
        return dict(version=V5, persistent=True, session_expiry=3600)
    return dict(version=V311, persistent=True)


def run_threads(fn, args_list):
    errors = []

    def wrap(*a):
        try:
            fn(*a)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=a) for a in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    if errors:
        raise errors[0]


def test_backlog_of_100k_messages_restores_intact(broker):
    broker.log_types = ["error", "warning", "notice", "information"]
    broker.start()
    for i in range(SESSIONS):
        with Client(broker, f"backlog-{i}", **session_kw(i)) as c:
            c.subscribe("backlog/all", 1)

    expected = list(range(1, PER_SESSION + 1))

    with Client(broker, "backlog-pub", max_inflight=2000) as p:
        p.publish_numbered("backlog/all", expected, payload_size=16, timeout=240)
    broker.restart("term")

    def drain(i):
        with Client(broker, f"backlog-{i}", **session_kw(i)) as c:
            assert c.session_present, f"backlog-{i}: session not restored"
            msgs = c.collect(PER_SESSION, timeout=240, quiet=0.5)
        assert_sequence(seqs_of(msgs), expected, f"backlog-{i}")
        assert all(m.topic == "backlog/all" and m.qos == 1 for m in msgs)

    run_threads(drain, [(i,) for i in range(SESSIONS)])
