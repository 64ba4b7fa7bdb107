"""A QoS 2 exchange cut by a crash resumes where it was (MQTT 5, 4.3.3).

Paho hides the packets, so the subscriber here is a raw MQTT 3.1.1 socket
client: it takes a QoS 2 PUBLISH, answers PUBREC, takes the PUBREL and then
stops answering. The broker is killed. After the restart the session's
client must get the PUBREL again, not the PUBLISH: having received the
PUBREL, a client may already have handed the message to its application,
and would take a second PUBLISH with that packet id as a new message.
"""

import socket
import struct
import time

from harness import HOST

TOPIC = "resume/a"


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class RawClient:
    """Just enough MQTT 3.1.1 to drive one QoS 2 exchange by hand."""

    def __init__(self, port: int, client_id: str):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        body = _string("MQTT") + bytes([4, 0x00]) + struct.pack("!H", 60) + _string(client_id)
        self.send(0x10, body)
        kind, flags, data = self.read()
        assert kind == 2 and data[1] == 0, f"CONNACK refused: {data!r}"
        self.session_present = bool(data[0] & 1)

    def send(self, first: int, body: bytes) -> None:
        self.sock.sendall(bytes([first]) + _remaining_length(len(body)) + body)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            buf += chunk
        return buf

    def read(self):
        """-> (packet type, flags, body)"""
        first = self._exact(1)[0]
        mult, length = 1, 0
        while True:
            b = self._exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first >> 4, first & 0x0F, self._exact(length)

    def subscribe(self, topic: str, qos: int) -> None:
        self.send(0x82, struct.pack("!H", 1) + _string(topic) + bytes([qos]))
        kind, _, data = self.read()
        assert kind == 9 and data[2] == qos, f"SUBACK: {kind} {data!r}"

    def ack(self, kind: int, mid: int) -> None:
        first = {5: 0x50, 7: 0x70}[kind]
        self.send(first, struct.pack("!H", mid))

    def close(self) -> None:
        self.sock.close()


def _publish_fields(flags: int, data: bytes):
    tlen = struct.unpack("!H", data[:2])[0]
    topic = data[2:2 + tlen].decode()
    mid = struct.unpack("!H", data[2 + tlen:4 + tlen])[0]
    return topic, mid, data[4 + tlen:]


def _exchange_until_pubrel(broker, clients, payload: bytes) -> int:
    """Subscriber q2 takes PUBLISH, sends PUBREC, takes PUBREL: -> packet id."""
    sub = RawClient(broker.port, "resume-q2")
    sub.subscribe("resume/#", 2)
    with clients("resume-pub") as pub:
        pub.publish(TOPIC, payload, qos=2)
    kind, flags, data = sub.read()
    assert kind == 3 and (flags >> 1) & 3 == 2, f"expected a QoS 2 PUBLISH, got type {kind}"
    topic, mid, body = _publish_fields(flags, data)
    assert (topic, body) == (TOPIC, payload)
    sub.ack(5, mid)
    kind, _, data = sub.read()
    assert kind == 6 and struct.unpack("!H", data[:2])[0] == mid, f"expected PUBREL {mid}, got type {kind}"
    return mid, sub


def _resume(broker, mid: int, payload_next: bytes, clients) -> None:
    sub = RawClient(broker.port, "resume-q2")
    try:
        assert sub.session_present
        kind, flags, data = sub.read()
        assert kind == 6, (f"after the restart the client got packet type {kind} "
                           f"({'PUBLISH again' if kind == 3 else 'unexpected'}), expected PUBREL {mid}")
        assert struct.unpack("!H", data[:2])[0] == mid
        sub.ack(7, mid)
        # The exchange is over: the next message is the next one, and the
        # first one never comes again.
        with clients("resume-pub") as pub:
            pub.publish(TOPIC, payload_next, qos=2)
        kind, flags, data = sub.read()
        assert kind == 3, f"expected the next PUBLISH, got type {kind}"
        topic, mid2, body = _publish_fields(flags, data)
        assert body == payload_next
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
