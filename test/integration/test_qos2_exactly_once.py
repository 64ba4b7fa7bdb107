"""QoS 2 exactly once across kill -9, with the broker's default in-flight
window (max_inflight_messages 20), for receivers that deliver at PUBLISH
(rawmqtt.Receiver): each cause found from outside, as a deterministic
reproduction.

  - Exchanges the receiver completed (PUBCOMP) just before the kill must not
    come back: past the first in-flight window a "PUBREL sent" entry is sent
    as a new PUBLISH.
  - A message already sent to a connected receiver, whose routing was only
    in the journal, must come back under the same packet id (the broker's
    own resend), not be routed again under a new one.
  - Incoming QoS 2 messages are routed in the order the broker routed them
    (at PUBREL), and one never released is not routed by the restart.
"""

import socket
import struct
import time

import pytest

from harness import V5, Client, assert_sequence, parse_seq
from rawmqtt import PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawClient, Receiver, mqtt_string, varint

MODES = ["tick", "publish", "periodic"]


@pytest.fixture
def default_window(broker):
    broker.max_inflight = None
    return broker


def seqs(payloads):
    return [parse_seq(p) for p in payloads]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("delay_ms", [0, 5, 50])
def test_completed_exchanges_do_not_come_back(default_window, mode, delay_ms):
    """A backlog drained in one burst, every exchange completed, then the
    kill: nothing comes again."""
    broker = default_window
    broker.plugin_opts["sync"] = mode
    broker.start()
    rx = Receiver(broker.port, "q2-done")
    rx.connect("done/#", 2)
    rx.close()
    n = 200
    with Client(broker, "q2-done-pub", version=V5, max_inflight=10) as p:
        p.publish_numbered("done/t", range(1, n + 1), qos=2)
    broker.settle()
    assert rx.connect(), "session lost"
    rx.wait_for(n)
    deadline = time.monotonic() + 10
    while rx.pending and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not rx.pending, f"exchanges not completed: {sorted(rx.pending)}"
    time.sleep(delay_ms / 1000)
    broker.kill()
    rx.close()
    broker.start()
    assert rx.connect(), "session lost"
    time.sleep(1.0)
    assert_sequence(seqs(rx.payloads()), list(range(1, n + 1)), f"deliveries ({mode}, kill {delay_ms} ms after)")
    rx.close()


@pytest.mark.parametrize("mode", MODES)
def test_publish_sent_before_the_kill_comes_back_under_its_packet_id(default_window, mode):
    broker = default_window
    broker.plugin_opts["sync"] = mode
    broker.start()
    sub = RawClient(broker.port, "q2-sent", version=5)
    sub.subscribe("sent/#", 2)
    with Client(broker, "q2-sent-pub", version=V5) as p:
        p.publish("sent/t", b"#1#", qos=2)
    kind, flags, data = sub.read()
    assert kind == PUBLISH
    _, qos, _, mid, _, body = sub.publish_in(flags, data)
    assert (qos, body) == (2, b"#1#")
    # Delivered at PUBLISH; the PUBREC never leaves: the broker dies first.
    broker.kill()
    sub.close()
    broker.start()
    rx = Receiver(broker.port, "q2-sent")
    rx.pending.add(mid)
    assert rx.connect(), "session lost"
    time.sleep(1.0)
    assert rx.resent == 1, f"the PUBLISH did not come again under packet id {mid}: {rx.delivered}"
    assert rx.payloads() == [], f"the message came again under a new packet id: {rx.delivered}"
    rx.close()


@pytest.mark.parametrize("mode", MODES)
def test_incoming_messages_routed_in_release_order(default_window, mode):
    """PUBLISH 1, a commit, PUBLISH 2, PUBREL 1, kill: the restart routes 1
    (released) and keeps 2 until its PUBREL; the subscriber gets 1, 2."""
    broker = default_window
    broker.plugin_opts["sync"] = mode
    broker.start()
    with Client(broker, "q2-order-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("order/#", 2)
    pub = RawClient(broker.port, "q2-order-pub", version=5)
    assert pub.publish("order/t", 1, b"#1#", 2) == 0
    broker.settle()
    assert pub.publish("order/t", 2, b"#2#", 2) == 0
    pub.ack(PUBREL, 1)
    kind, _, data = pub.read()
    assert kind == PUBCOMP and struct.unpack("!H", data[:2])[0] == 1
    broker.kill()
    pub.close()
    broker.start()

    sub = Receiver(broker.port, "q2-order-sub")
    assert sub.connect()
    sub.wait_for(1)
    time.sleep(0.5)
    assert_sequence(seqs(sub.payloads()), [1], "before PUBREL 2")
    pub = RawClient(broker.port, "q2-order-pub", version=5)
    assert pub.session_present
    pub.ack(PUBREL, 2)
    kind, _, data = pub.read()
    assert kind == PUBCOMP and struct.unpack("!H", data[:2])[0] == 2
    sub.wait_for(2)
    time.sleep(0.5)
    assert_sequence(seqs(sub.payloads()), [1, 2], "after PUBREL 2")
    pub.close()
    sub.close()


def test_pubrel_resent_after_a_takeover_whose_write_failed(default_window):
    """Mosquitto 2.1.2, with any persistence: a takeover puts an exchange
    whose PUBREL was sent back to "resend PUBREL"; when writing to the new
    connection fails (it is already closed), the state stays there, and the
    next reconnection turns it into a PUBLISH (DUP) of a message the client
    already has. The plugin puts such an exchange back to "PUBREL sent" at
    the next tick, so the next reconnection gets the PUBREL."""
    broker = default_window
    broker.start()
    a = RawClient(broker.port, "q2-lapse", version=5)
    a.subscribe("lapse/#", 2)
    with Client(broker, "q2-lapse-pub", version=V5) as p:
        p.publish("lapse/t", b"#1#", qos=2)
    kind, flags, data = a.read()
    assert kind == PUBLISH
    mid = a.publish_in(flags, data)[3]
    a.ack(PUBREC, mid)
    a.read_pubrel(mid)
    # The PUBCOMP never comes. A takeover whose connection is gone at once.
    for attempt in range(20):
        b = socket.create_connection(("127.0.0.1", broker.port))
        props = b"\x05\x11" + struct.pack("!I", 3600)
        body = mqtt_string("MQTT") + bytes([5, 0x00]) + struct.pack("!H", 60) + props + mqtt_string("q2-lapse")
        b.sendall(bytes([0x10]) + varint(len(body)) + body)
        b.close()
        time.sleep(0.3)
        if "q2-lapse [" in broker.log() and "disconnected: Broken pipe" in broker.log():
            break
    else:
        pytest.skip("no takeover write failed in 20 tries (the race did not happen here)")
    a.close()
    c = RawClient(broker.port, "q2-lapse", version=5)
    assert c.session_present
    c.read_pubrel(mid)  # after the failed takeover
    c.ack(PUBCOMP, mid)
    c.close()


@pytest.mark.parametrize("mode", MODES)
def test_pubrel_resumes_behind_acknowledged_deliveries(default_window, mode):
    """30 QoS 1 deliveries acknowledged just before the kill (their deletion
    not committed yet) are queued ahead of a QoS 2 message whose PUBREL was
    sent: after the restart they would fill the in-flight window (the
    client's Receive Maximum, 20), and the QoS 2 message would go out as a
    new PUBLISH. Its PUBREL comes first instead."""
    broker = default_window
    broker.plugin_opts["sync"] = mode
    broker.start()
    sub = RawClient(broker.port, "q2-behind", version=5)
    sub.subscribe("behind/#", 2)
    sub.close()
    with Client(broker, "q2-behind-pub", version=V5, max_inflight=10) as p:
        p.publish_numbered("behind/q1", range(1, 31), qos=1)
        p.publish("behind/q2", b"#100#", qos=2)
    broker.settle()
    sub = RawClient(broker.port, "q2-behind", version=5, receive_maximum=20)
    while True:
        kind, flags, data = sub.read()
        if kind == PUBLISH:
            _, qos, _, mid, _, body = sub.publish_in(flags, data)
            sub.ack(PUBACK if qos == 1 else PUBREC, mid)
        elif kind == PUBREL:
            q2_mid = struct.unpack("!H", data[:2])[0]
            break
    broker.kill()
    sub.close()
    broker.start()
    # The client answered that PUBREL with PUBCOMP, which the broker never
    # read: for the client the exchange is over and the packet id free.
    rx = Receiver(broker.port, "q2-behind", receive_maximum=20)
    assert rx.connect()
    time.sleep(1.0)
    assert b"#100#" not in rx.payloads(), f"the QoS 2 message came again as a new PUBLISH: {rx.delivered}"
    rx.close()
