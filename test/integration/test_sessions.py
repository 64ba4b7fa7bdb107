"""Persistent sessions and their queued QoS 1 / QoS 2 messages survive a
clean restart and kill -9; an expired session does not come back."""

import time

import pytest

from harness import V5, V311, Client, assert_no_dup_flags, assert_sequence, numbered_payload, seqs_of

# Two kinds of persistent subscriber: MQTT 3.1.1 clean_session=False and
# MQTT 5 clean_start=False with a session expiry interval.
KINDS = {
    "v311": dict(version=V311, persistent=True),
    "v5": dict(version=V5, persistent=True, session_expiry=3600),
}


def topics(tag):
    """QoS 1 topic, QoS 2 topic."""
    return f"{tag}/q1", f"{tag}/q2"


def make_subscriber(broker, client_id, kind, tag):
    """Connects with a new session, subscribes to tag/q1 (QoS 1) and tag/q2
    (QoS 2), disconnects."""
    q1, q2 = topics(tag)
    with Client(broker, client_id, **KINDS[kind]) as c:
        assert not c.session_present, f"{client_id}: unexpected old session"
        c.subscribe(q1, 1)
        c.subscribe(q2, 2)


def publish_both(broker, tag, seqs):
    """Each number to tag/q1 at QoS 1 and tag/q2 at QoS 2, interleaved, all acked."""
    q1, q2 = topics(tag)
    items = []
    for s in seqs:
        items.append((q1, numbered_payload(s), 1))
        items.append((q2, numbered_payload(s), 2))
    with Client(broker, f"pub-{tag}") as p:
        p.publish_many(items)


def drain(broker, client_id, kind, tag, expected):
    """Reconnects the persistent session, expects exactly `expected` (in
    order, no duplicates, no DUP flag) on both topics, disconnects."""
    q1, q2 = topics(tag)
    with Client(broker, client_id, **KINDS[kind]) as c:
        assert c.session_present, f"{client_id}: session not restored (session present = 0)"
        if expected:
            c.wait_for(len(expected), topic=q1)
            c.wait_for(len(expected), topic=q2)
        got = c.listen(0.5 if expected else 1.0)
        m1, m2 = c.messages(q1), c.messages(q2)
        assert_sequence(seqs_of(m1), expected, f"{client_id} QoS 1")
        assert_sequence(seqs_of(m2), expected, f"{client_id} QoS 2")
        assert len(got) == 2 * len(expected), f"{client_id}: messages on other topics: {got}"
        assert all(m.qos == 1 for m in m1), f"{client_id}: QoS 1 topic delivered at {sorted({m.qos for m in m1})}"
        assert all(m.qos == 2 for m in m2), f"{client_id}: QoS 2 topic delivered at {sorted({m.qos for m in m2})}"
        assert_no_dup_flags(m1, f"{client_id} QoS 1")


@pytest.mark.parametrize("how", ["term", "kill"])
def test_queued_messages_survive_restart(broker, how):
    broker.start()
    for kind in KINDS:
        make_subscriber(broker, f"sess-{kind}", kind, "sess")
    expected = list(range(1, 51))
    publish_both(broker, "sess", expected)
    broker.settle()

    broker.restart(how)

    for kind in KINDS:
        drain(broker, f"sess-{kind}", kind, "sess", expected)


def test_repeated_restart_cycles(broker):
    """Three cycles of publish / restart (kill -9, clean, kill -9). The
    'eager' sessions drain after every restart and must then get only that
    cycle's messages (delivered ones are not delivered again); the 'away'
    sessions stay away and finally get every cycle's messages in order."""
    broker.start()
    for kind in KINDS:
        make_subscriber(broker, f"eager-{kind}", kind, "cyc")
        make_subscriber(broker, f"away-{kind}", kind, "cyc")

    all_seqs = []
    for cycle, how in enumerate(["kill", "term", "kill"]):
        seqs = list(range(cycle * 20 + 1, cycle * 20 + 21))
        all_seqs += seqs
        publish_both(broker, "cyc", seqs)
        broker.settle()
        broker.restart(how)
        for kind in KINDS:
            drain(broker, f"eager-{kind}", kind, "cyc", seqs)

    broker.settle()
    broker.restart("kill")
    for kind in KINDS:
        drain(broker, f"eager-{kind}", kind, "cyc", [])
        drain(broker, f"away-{kind}", kind, "cyc", all_seqs)


def test_messages_published_across_runs_keep_their_order(broker):
    """A queue that spans several broker runs: messages from a later run
    come after those of an earlier run."""
    broker.start()
    make_subscriber(broker, "span-v5", "v5", "span")
    expected = []
    for run in range(3):
        seqs = list(range(run * 10 + 1, run * 10 + 11))
        expected += seqs
        publish_both(broker, "span", seqs)
        broker.restart("term")
    drain(broker, "span-v5", "v5", "span", expected)


def test_expired_session_is_gone_after_restart(broker, clients):
    """A session whose expiry interval passes while the broker is down is
    gone after the restart; one with a long interval is still there."""
    broker.start()
    with Client(broker, "expiring", version=V5, persistent=True, session_expiry=2) as c:
        c.subscribe("exp/t", 1)
    with Client(broker, "lasting", version=V5, persistent=True, session_expiry=300) as c:
        c.subscribe("exp/t", 1)
    with Client(broker, "exp-pub") as p:
        p.publish_numbered("exp/t", [1, 2, 3])
    broker.stop()
    time.sleep(3.0)
    broker.start()

    short = clients("expiring", version=V5, persistent=True, session_expiry=2)
    assert not short.session_present, "expired session came back after restart"
    long = clients("lasting", version=V5, persistent=True, session_expiry=300)
    assert long.session_present, "unexpired session lost"
    assert_sequence(seqs_of(long.collect(3)), [1, 2, 3], "lasting session")
    assert short.listen(0.5) == [], "expired session delivered queued messages"
