"""plugin_opt_seq_property: every message delivered to a stored session
carries the session's sequence number as an MQTT 5 user property, counting
1, 2, 3 ... across online and offline delivery and restarts; a message sent
again (no acknowledgement before the connection ended) carries its number
again, so the client can tell a gap from a duplicate.
"""

import time

import pytest

from harness import parse_seq
from rawmqtt import PUBACK, PUBLISH, RawClient

PROP = "seq"
TOPIC = "seqp/t"


@pytest.fixture(params=["memory", "disk"])
def broker(request, broker):
    """Offline queues in the broker's memory and in the database only."""
    broker.plugin_opts["queue_storage"] = request.param
    return broker


def _seq_of(msg_props):
    for name, value in getattr(msg_props, "UserProperty", []) or []:
        if name == PROP:
            return int(value)
    return None


def _subscriber(clients, broker, name="sq-sub"):
    sub = clients(name, persistent=True, session_expiry=3600, connect=False)
    sub.seqs = []
    orig = sub.mqtt.on_message

    def on_message(client, userdata, msg):
        sub.seqs.append((bytes(msg.payload), _seq_of(msg.properties)))
        orig(client, userdata, msg)

    sub.mqtt.on_message = on_message
    sub.connect()
    return sub


def _wait_logged(broker, text, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while broker.log().count(text) < count:
        assert time.monotonic() < deadline, f"the broker did not log {text!r} {count} times"
        time.sleep(0.05)


def test_numbers_count_across_offline_and_restart(broker, clients):
    broker.plugin_opts["seq_property"] = PROP
    broker.start()
    sub = _subscriber(clients, broker)
    sub.subscribe("seqp/#", 1)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 4))
    sub.wait_for(3)
    sub.disconnect()
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(4, 7))
    broker.restart()
    sub = _subscriber(clients, broker)
    sub.wait_for(3)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(7, 9))
    sub.wait_for(5)
    first = [s for _, s in sub.seqs]
    assert first == [4, 5, 6, 7, 8], first
    sub.disconnect()
    # The PUBACK of 8 travels just before the DISCONNECT: a broker stopped
    # before reading them would rightly send 8 again (slow under valgrind).
    _wait_logged(broker, "Received DISCONNECT from sq-sub", 1)
    # A restart with an empty queue keeps counting.
    broker.restart()
    sub = _subscriber(clients, broker)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(9, 10))
    sub.wait_for(1)
    assert [s for _, s in sub.seqs] == [9]


def test_off_by_default(broker, clients):
    broker.start()
    sub = _subscriber(clients, broker)
    sub.subscribe("seqp/#", 1)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 3))
    sub.wait_for(2)
    assert [s for _, s in sub.seqs] == [None, None]


def test_sessions_count_separately_and_clean_sessions_get_none(broker, clients):
    broker.plugin_opts["seq_property"] = PROP
    broker.start()
    a = _subscriber(clients, broker, "sq-a")
    a.subscribe("seqp/#", 1)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 3))
    a.wait_for(2)
    b = _subscriber(clients, broker, "sq-b")
    b.subscribe("seqp/#", 1)
    clean = clients("sq-clean")
    clean.subscribe("seqp/#", 1)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(3, 5))
    a.wait_for(4)
    b.wait_for(2)
    clean.wait_for(2)
    assert [s for _, s in a.seqs] == [1, 2, 3, 4]
    assert [s for _, s in b.seqs] == [1, 2]


def _next_publish(raw):
    """-> (dup, packet id, seq property or None) of the next PUBLISH."""
    kind, flags, data = raw.read()
    assert kind == PUBLISH, kind
    dup, _, _, mid, users, _ = raw.publish_in(flags, data)
    return dup, mid, int(users[PROP]) if PROP in users else None


def test_resend_keeps_its_number(broker, clients):
    broker.plugin_opts["seq_property"] = PROP
    broker.start()
    raw = RawClient(broker.port, "sq-raw", version=5)
    raw.subscribe("seqp/#", 1)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 4))
    got = [_next_publish(raw) for _ in range(3)]
    assert [g[2] for g in got] == [1, 2, 3]
    raw.ack(PUBACK, got[0][1])  # 1 acknowledged; 2 and 3 not
    raw.close()
    raw = RawClient(broker.port, "sq-raw", version=5)
    again = [_next_publish(raw) for _ in range(2)]
    assert [g[2] for g in again] == [2, 3], again
    # Disk: the stored messages are handed back to the broker, whose
    # interface has no way to set their DUP flag (as after a restart).
    if broker.plugin_opts["queue_storage"] == "memory":
        assert [g[0] for g in again] == [True, True], again
    for g in again:
        raw.ack(PUBACK, g[1])
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(4, 5))
    assert _next_publish(raw)[2] == 4
    raw.close()


def test_numbers_follow_a_hand_back_in_parts(broker, clients):
    """A backlog longer than the hand-back window (disk: it goes back in
    parts) with messages published while it drains: the client gets every
    message once, in order, numbered 1, 2, 3 ... in the order it gets them."""
    broker.plugin_opts["seq_property"] = PROP
    broker.plugin_opts["queue_window"] = "64"  # the least
    broker.start()
    sub = _subscriber(clients, broker)
    sub.subscribe("seqp/#", 1)
    sub.disconnect()
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 301))
    sub = _subscriber(clients, broker)
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(301, 341))
    sub.wait_for(340)
    payloads = [parse_seq(p) for p, _ in sub.seqs]
    assert payloads == list(range(1, 341)), payloads
    assert [s for _, s in sub.seqs] == list(range(1, 341))
