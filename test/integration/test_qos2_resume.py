"""A QoS 2 exchange cut by a crash resumes where it was (MQTT 5, 4.3.3).

Paho hides the packets, so the subscriber here is a raw MQTT 3.1.1 socket
client: it takes a QoS 2 PUBLISH, answers PUBREC, takes the PUBREL and then
stops answering. The broker is killed. After the restart the session's
client must get the PUBREL again, not the PUBLISH: having received the
PUBREL, a client may already have handed the message to its application,
and would take a second PUBLISH with that packet id as a new message.
"""

import time

import pytest

from rawmqtt import PUBCOMP, PUBLISH, PUBREC, RawClient

TOPIC = "resume/a"


@pytest.fixture(params=[None, 1000], ids=["default-window", "window-1000"])
def broker(request, broker):
    """With the broker's default max_inflight_messages (20), and with 1000."""
    broker.max_inflight = request.param
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
