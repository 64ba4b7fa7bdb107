"""What the broker acknowledged, it keeps across kill -9: a session it sent
CONNACK for, a subscription it sent SUBACK for, an unsubscription it sent
UNSUBACK for, and a will it accepted, killed within a millisecond of the
acknowledgement (before any commit: an idle broker commits up to 100 ms
later). In every sync mode.

The will cases follow Mosquitto's own test 15-persist-client-will (tag
v2.1.2): a subscriber subscribed and connected, a publisher connected with a
will (kept, ended with or without it, or taken over), a ping, the kill; after
the restart the subscriber's session and subscription are there and the will
is delivered as its connection's end requires."""

import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from harness import V5, V311, Client, assert_sequence, io_fault, numbered_payload, seqs_of

MODES = ["tick", "publish", "periodic"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", [V5, V311])
def test_subscription_acknowledged_just_before_kill(broker, mode, version):
    broker.plugin_opts["sync"] = mode
    broker.start()
    kw = dict(version=version, persistent=True, session_expiry=3600 if version == V5 else None)
    c = Client(broker, "acked-sub", **kw)
    c.subscribe("acked/a", 1)
    c.subscribe("acked/b", 2)
    broker.kill()  # right after the SUBACK
    c.drop()
    broker.start()
    with Client(broker, "acked-pub") as p:
        p.publish_numbered("acked/a", [1, 2])
        p.publish_numbered("acked/b", [3], qos=2)
    with Client(broker, "acked-sub", **kw) as c:
        assert c.session_present, "the session acknowledged by CONNACK is gone"
        assert_sequence(seqs_of(c.collect(3)), [1, 2, 3], "messages to the acknowledged subscriptions")


@pytest.mark.parametrize("mode", MODES)
def test_unsubscription_acknowledged_just_before_kill(broker, mode):
    broker.plugin_opts["sync"] = mode
    broker.start()
    with Client(broker, "unsub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("gone/#", 1)
        c.subscribe("kept/#", 1)
    broker.settle()
    c = Client(broker, "unsub", version=V5, persistent=True, session_expiry=3600)
    acked = []

    def on_unsubscribe(*_):
        with c.cond:
            acked.append(1)
            c.cond.notify_all()
    c.mqtt.on_unsubscribe = on_unsubscribe
    c.mqtt.unsubscribe("gone/#")
    c._wait(lambda: acked, 10, "UNSUBACK")
    broker.kill()
    c.drop()
    broker.start()
    with Client(broker, "pub") as p:
        p.publish_numbered("gone/x", [1])
        p.publish_numbered("kept/x", [2])
    with Client(broker, "unsub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(1, quiet=0.5)), [2], "after the unsubscription")


@pytest.mark.parametrize("mode", MODES)
def test_clean_start_that_replaced_a_session_is_kept(broker, mode):
    """CONNACK with session present 0 ended the old session: a kill right
    after must not bring the old session (and its queue) back."""
    broker.plugin_opts["sync"] = mode
    broker.start()
    with Client(broker, "renew", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("old/#", 1)
    with Client(broker, "pub") as p:
        p.publish_numbered("old/x", [1, 2, 3])
    broker.settle()
    c = Client(broker, "renew", version=V5, persistent=False, session_expiry=3600)
    assert not c.session_present
    c.subscribe("new/#", 1)
    broker.kill()
    c.drop()
    broker.start()
    with Client(broker, "pub") as p:
        p.publish_numbered("old/x", [4])
        p.publish_numbered("new/x", [5])
    with Client(broker, "renew", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(1, quiet=0.5)), [5], "the new session only")


# --------------------------------------------------------------------------
# Wills: 15-persist-client-will
# --------------------------------------------------------------------------

WILL_TOPIC = "test-will-msg"
WILL = b"My simple will message"


def will_case(broker, session_expiry, qos, retain, delay, end):
    """end: None (connected at the kill), 'with-will' (DISCONNECT 0x04),
    'normal' (DISCONNECT 0x00), 'takeover' (the same client id resumes the
    session: Mosquitto drops the old connection's will), 'takeover-clean'
    (the same client id with a new session: the old will is published)."""
    sub = Client(broker, "test-will-subscriber", version=V5, persistent=True, session_expiry=60)
    sub.subscribe(WILL_TOPIC, 1)
    will = {"topic": WILL_TOPIC, "payload": WILL, "qos": qos, "retain": retain, "delay": delay or None}
    pub = Client(broker, "test-will-publisher", version=V5, persistent=session_expiry > 0,
                 session_expiry=session_expiry, will=will)
    if end in ("takeover", "takeover-clean"):
        Client(broker, "test-will-publisher", version=V5, persistent=end == "takeover",
               session_expiry=session_expiry).drop()
    elif end is not None:
        props = None
        pub.mqtt.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT,
                                                  "Disconnect with will message" if end == "with-will"
                                                  else "Normal disconnection"), properties=props)
        time.sleep(0.05)
    Client(broker, "test-helper", version=V5).disconnect()
    got_before = [m.payload for m in sub.messages()]
    broker.kill()
    sub.drop()
    pub.drop()
    return got_before


CASES = [
    # session expiry, will qos, retain, delay, how the publisher's connection ended
    (0, 1, False, 0, None),
    (0, 1, True, 0, None),
    (0, 0, True, 0, None),
    (60, 1, False, 0, None),
    (60, 1, True, 0, None),
    (60, 1, False, 30, None),
    (60, 1, True, 30, None),
    (0, 1, False, 30, None),
    (60, 1, False, 0, "with-will"),
    (60, 1, True, 0, "normal"),
    (0, 1, True, 0, "with-will"),
    (60, 1, False, 30, "with-will"),
    (60, 1, False, 0, "takeover"),
    (60, 1, True, 0, "takeover-clean"),
]


# Each case in one sync mode, the modes taken in turn.
@pytest.mark.parametrize("mode,session_expiry,qos,retain,delay,end",
                         [(MODES[i % len(MODES)], *c) for i, c in enumerate(CASES)])
def test_will_across_kill(broker, mode, session_expiry, qos, retain, delay, end):
    broker.plugin_opts["sync"] = mode
    broker.start()
    before = will_case(broker, session_expiry, qos, retain, delay, end)
    delayed = delay > 0 and session_expiry > 0
    # Due at the crash: connected then (the crash cut the connection), or
    # ended with the will, without a delay still running.
    due = end not in ("normal", "takeover") and not delayed
    broker.start()
    with Client(broker, "test-will-subscriber", version=V5, persistent=True, session_expiry=60) as sub:
        assert sub.session_present, "the subscriber's session is gone"
        got = before + [m.payload for m in sub.listen(1.0)]
        if qos > 0 and due:
            assert WILL in got, f"the will was not delivered (before the kill: {before})"
        if not due:
            assert WILL not in got, f"a will that was not due was delivered: {got}"
        # The subscription is there: a new message reaches it.
        with Client(broker, "after") as p:
            p.publish(WILL_TOPIC, numbered_payload(1), qos=1)
        sub.wait_for(1)
        assert numbered_payload(1) in [m.payload for m in sub.collect(1, quiet=0.3)]
    with Client(broker, "retained-check", version=V5) as c:
        c.subscribe(WILL_TOPIC, 1)
        msgs = c.listen(0.5)
    retained = [m.payload for m in msgs if m.retain]
    if retain and due:
        assert retained == [WILL], f"retained will missing: {msgs}"
    elif not due:
        assert retained == [], f"a will not due was retained: {msgs}"


@pytest.mark.parametrize("mode", MODES)
def test_will_published_just_before_kill_is_kept(broker, mode):
    """The broker publishes a will itself (no MESSAGE_IN): its retained copy
    and the copy queued for an offline session survive a kill right after."""
    broker.plugin_opts["sync"] = mode
    broker.start()
    with Client(broker, "will-off", version=V5, persistent=True, session_expiry=3600) as off:
        off.subscribe(WILL_TOPIC, 1)
    on = Client(broker, "will-on", version=V5)
    on.subscribe(WILL_TOPIC, 1)
    pub = Client(broker, "will-pub", version=V5,
                 will={"topic": WILL_TOPIC, "payload": WILL, "qos": 1, "retain": True})
    pub.drop()  # no DISCONNECT: the will is due
    on.wait_for(1)
    broker.kill()
    on.drop()
    broker.start()
    with Client(broker, "will-off", version=V5, persistent=True, session_expiry=3600) as off:
        assert [m.payload for m in off.collect(1, quiet=0.5)] == [WILL], "the offline session's copy"
    with Client(broker, "retained-check", version=V5) as c:
        c.subscribe(WILL_TOPIC, 1)
        assert [(m.payload, m.retain) for m in c.collect(1, quiet=0.3)] == [(WILL, True)], "the retained will"


@pytest.mark.parametrize("delay", [0, 1], ids=["at-departure", "delayed"])
def test_will_crash_between_routing_and_end(broker, workdir, delay):
    """A crash in the middle: the will routed (its journal record written,
    its PUBLISH sent to a connected subscriber), but the broker has not yet
    said the will ended. The restart routes it again and the will is gone:
    every session gets it once, the retained copy is there once, and no
    later restart publishes it again. The crash is exact: the fault shim
    kills the broker right after it sends that PUBLISH."""
    control = io_fault(broker, workdir)
    broker.start()
    with Client(broker, "will-off", version=V5, persistent=True, session_expiry=3600) as off:
        off.subscribe(WILL_TOPIC, 1)
    on = Client(broker, "will-on", version=V5)
    on.subscribe(WILL_TOPIC, 1)
    will = {"topic": WILL_TOPIC, "payload": WILL, "qos": 1, "retain": True, "delay": delay}
    pub = Client(broker, "will-pub", version=V5, persistent=delay > 0, session_expiry=60 if delay else 0,
                 will=will)
    broker.settle()
    control.write_text("kill-after-publish-sent")
    pub.drop()  # no DISCONNECT: the will is due (after its delay)
    rc = broker.proc.wait(10 + delay)
    assert rc == -9, f"the broker was to kill itself after sending the will (status {rc})"
    control.unlink()
    on.drop()

    broker.start()
    assert "1 messages routed again from the journal" in broker.log(), broker.log()[-2000:]
    with Client(broker, "will-off", version=V5, persistent=True, session_expiry=3600) as off:
        assert [m.payload for m in off.collect(1, quiet=1.0 + delay)] == [WILL], "the offline session's copy"
    with Client(broker, "retained-check", version=V5) as c:
        c.subscribe(WILL_TOPIC, 1)
        assert [(m.payload, m.retain) for m in c.collect(1, quiet=0.3)] == [(WILL, True)], "the retained will"
    broker.restart("kill")
    with Client(broker, "will-off", version=V5, persistent=True, session_expiry=3600) as off:
        assert off.listen(1.0 + delay) == [], "the will was published again after a second restart"
