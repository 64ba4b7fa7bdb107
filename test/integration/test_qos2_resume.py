"""A QoS 2 exchange cut by a crash resumes where it was (MQTT 5, 4.3.3).

Paho hides the packets, so the subscriber here is a raw MQTT 3.1.1 socket
client: it takes a QoS 2 PUBLISH, answers PUBREC, takes the PUBREL and then
stops answering. The broker is killed. After the restart the session's
client must get the PUBREL again, not the PUBLISH: having received the
PUBREL, a client may already have handed the message to its application,
and would take a second PUBLISH with that packet id as a new message.
"""

import struct
import time

import pytest

from rawmqtt import PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawClient

TOPIC = "resume/a"


@pytest.fixture(params=[(None, "memory"), (1000, "memory"), (None, "disk")],
                ids=["default-window", "window-1000", "disk"])
def broker(request, broker):
    """With the broker's default max_inflight_messages (20), and with 1000;
    and with the queues on disk, where the broker hands an offline session's
    queue back to the store."""
    broker.max_inflight, storage = request.param
    broker.plugin_opts["queue_storage"] = storage
    return broker


def _exchange_until_pubrel(broker, clients, payload: bytes) -> int:
    """Subscriber q2 takes PUBLISH, sends PUBREC, takes PUBREL: -> packet id."""
    sub = RawClient(broker.port, "resume-q2")
    sub.subscribe("resume/#", 2)
    with clients("resume-pub") as pub:
        pub.publish(TOPIC, payload, qos=2)
    kind, flags, data = sub.read()
    assert kind == PUBLISH, f"expected a PUBLISH, got type {kind}"
    _, qos, topic, mid, _, body = sub.publish_in(flags, data)
    assert (qos, topic, body) == (2, TOPIC, payload)
    sub.ack(PUBREC, mid)
    sub.read_pubrel(mid)
    return mid, sub


def _resume(broker, mid: int, payload_next: bytes, clients) -> None:
    sub = RawClient(broker.port, "resume-q2")
    try:
        assert sub.session_present
        sub.read_pubrel(mid)
        sub.ack(PUBCOMP, mid)
        # The exchange is over: the next message is the next one, and the
        # first one never comes again.
        with clients("resume-pub") as pub:
            pub.publish(TOPIC, payload_next, qos=2)
        kind, flags, data = sub.read()
        assert kind == PUBLISH, f"expected the next PUBLISH, got type {kind}"
        assert sub.publish_in(flags, data)[5] == payload_next
    finally:
        sub.close()


def test_pubrel_resent_after_kill(broker, clients):
    """The PUBREL left just before the kill: only the journal knows."""
    broker.start()
    mid, sub = _exchange_until_pubrel(broker, clients, b"first")
    broker.kill()
    sub.close()
    broker.start()
    _resume(broker, mid, b"second", clients)
    assert "1 QoS 2 exchanges resumed at PUBREL" in broker.log(), broker.log()


def test_pubrel_resent_after_commit_and_kill(broker, clients):
    """The state change was committed before the kill."""
    broker.start()
    mid, sub = _exchange_until_pubrel(broker, clients, b"first")
    time.sleep(0.5)
    broker.kill()
    sub.close()
    broker.start()
    _resume(broker, mid, b"second", clients)


def test_pubrel_resent_after_clean_restart(broker, clients):
    broker.start()
    mid, sub = _exchange_until_pubrel(broker, clients, b"first")
    sub.close()
    broker.restart()
    _resume(broker, mid, b"second", clients)


def _resume_after_two_kills(broker, mid: int, sub, clients) -> None:
    """Killed right after the PUBREL; the client stays away through a
    restart that commits what the journal said, and a second kill; then it
    returns and must get the PUBREL."""
    broker.kill()
    sub.close()
    broker.start()
    broker.settle()
    broker.kill()
    broker.start()
    _resume(broker, mid, b"second", clients)


def test_pubrel_resent_after_two_restarts(broker, clients):
    broker.start()
    mid, sub = _exchange_until_pubrel(broker, clients, b"first")
    _resume_after_two_kills(broker, mid, sub, clients)


def _stored_then_pubrel(broker, clients, ahead: int) -> int:
    """ahead QoS 1 messages and a QoS 2 one wait in the session's stored
    queue; the client comes back, acknowledges the QoS 1 messages and takes
    the QoS 2 one up to its PUBREL; the broker is killed before any of it is
    committed. -> the QoS 2 message's packet id."""
    broker.plugin_opts["commit_interval_ms"] = "10000"
    broker.start()
    sub = RawClient(broker.port, "resume-q2")
    sub.subscribe("resume/#", 2)
    sub.close()
    with clients("resume-pub") as pub:
        for i in range(ahead):
            pub.publish(TOPIC, b"q1-%d" % i, qos=1)
        pub.publish(TOPIC, b"first", qos=2)
    broker.restart()
    sub = RawClient(broker.port, "resume-q2")
    mid = None
    while mid is None:
        kind, flags, data = sub.read()
        assert kind == PUBLISH, f"expected a PUBLISH, got type {kind}"
        _, qos, _, m, _, body = sub.publish_in(flags, data)
        if qos == 1:
            sub.ack(PUBACK, m)
        else:
            assert body == b"first"
            mid = m
    sub.ack(PUBREC, mid)
    sub.read_pubrel(mid)
    broker.kill()
    sub.close()
    return mid


def _pubrel_after_redeliveries(broker, mid: int) -> None:
    """The client returns: the QoS 1 messages come again (their
    acknowledgements were lost), the QoS 2 one only as its PUBREL, under
    the packet id the client knows."""
    sub = RawClient(broker.port, "resume-q2")
    try:
        assert sub.session_present
        while True:
            kind, flags, data = sub.read()
            if kind != PUBLISH:
                break
            _, qos, _, m, _, body = sub.publish_in(flags, data)
            assert qos == 1, f"the QoS 2 message came again as a PUBLISH (packet id {m}, {body!r})"
            sub.ack(PUBACK, m)
        assert kind == PUBREL, f"expected PUBREL, got type {kind}"
        got = struct.unpack("!H", data[:2])[0]
        assert got == mid, f"expected PUBREL {mid}, got PUBREL {got}"
    finally:
        sub.close()


def test_pubrel_resent_with_its_packet_id(broker, clients):
    """The stored state is the one the message had before it was sent (the
    later ones were not committed) and only the journal says its PUBREL
    left: the resumed PUBREL carries the id the client knows, not a new one."""
    mid = _stored_then_pubrel(broker, clients, 3)
    broker.start()
    _pubrel_after_redeliveries(broker, mid)


def test_pubrel_resent_behind_redelivered_messages(broker, clients):
    """More QoS 1 messages than the in-flight window (20) sit ahead of the
    QoS 2 one. The restart resumes the exchange; after a second restart it
    is stored with its state, behind the QoS 1 messages again: when the
    client returns it must still get the PUBREL first, not a second PUBLISH."""
    mid = _stored_then_pubrel(broker, clients, 25)
    broker.start()
    assert "1 QoS 2 exchanges resumed at PUBREL" in broker.log(), broker.log()
    broker.restart()
    _pubrel_after_redeliveries(broker, mid)

@pytest.mark.parametrize("restart", ["kill", "term"])
def test_pubrel_resent_for_a_stored_message(broker, clients, restart):
    """The message waited in the session's stored queue; the client came
    back, got it up to PUBREL, and the broker was killed."""
    broker.start()
    sub = RawClient(broker.port, "resume-q2")
    sub.subscribe("resume/#", 2)
    sub.close()
    with clients("resume-pub") as pub:
        pub.publish(TOPIC, b"first", qos=2)
    broker.settle()
    broker.restart(restart)
    sub = RawClient(broker.port, "resume-q2")
    kind, flags, data = sub.read()
    assert kind == PUBLISH, f"expected a PUBLISH, got type {kind}"
    _, qos, topic, mid, _, body = sub.publish_in(flags, data)
    assert (qos, topic, body) == (2, TOPIC, b"first")
    sub.ack(PUBREC, mid)
    sub.read_pubrel(mid)
    _resume_after_two_kills(broker, mid, sub, clients)

