"""plugin_opt_seq_property: every message delivered to a stored session
carries the session's sequence number as an MQTT 5 user property, counting
1, 2, 3 ... across online and offline delivery and restarts; a message sent
again (no acknowledgement before the connection ended) carries its number
again, so the client can tell a gap from a duplicate.
"""

import socket
import struct

from harness import HOST

PROP = "seq"
TOPIC = "seqp/t"


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


# -- a raw MQTT 5 subscriber that withholds PUBACK

def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data, i):
    mult, v = 1, 0
    while True:
        b = data[i]
        i += 1
        v += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return v, i


def _s(x):
    b = x.encode()
    return struct.pack("!H", len(b)) + b


class RawSub:
    def __init__(self, port, client_id, subscribe=None):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        props = b"\x11" + struct.pack("!I", 3600)
        body = _s("MQTT") + bytes([5, 0x00]) + struct.pack("!H", 60) + _varint(len(props)) + props + _s(client_id)
        self._send(0x10, body)
        kind, _, data = self.read()
        assert kind == 2 and data[1] == 0
        if subscribe:
            self._send(0x82, struct.pack("!H", 1) + b"\x00" + _s(subscribe) + b"\x01")
            kind, _, data = self.read()
            assert kind == 9

    def _send(self, first, body):
        self.sock.sendall(bytes([first]) + _varint(len(body)) + body)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def read(self):
        first = self._exact(1)[0]
        mult, length = 1, 0
        while True:
            b = self._exact(1)[0]
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return first >> 4, first & 0x0F, self._exact(length)

    def publish_in(self):
        """-> (dup, packet id, seq property, payload) of the next PUBLISH."""
        kind, flags, data = self.read()
        assert kind == 3, kind
        tlen = struct.unpack("!H", data[:2])[0]
        i = 2 + tlen
        mid = struct.unpack("!H", data[i:i + 2])[0]
        i += 2
        plen, i = _read_varint(data, i)
        end = i + plen
        seq = None
        while i < end:
            pid = data[i]
            i += 1
            if pid == 0x26:
                nl = struct.unpack("!H", data[i:i + 2])[0]
                name = data[i + 2:i + 2 + nl].decode()
                i += 2 + nl
                vl = struct.unpack("!H", data[i:i + 2])[0]
                value = data[i + 2:i + 2 + vl].decode()
                i += 2 + vl
                if name == PROP:
                    seq = int(value)
            elif pid == 0x0B:  # subscription identifier
                _, i = _read_varint(data, i)
            elif pid in (0x01,):
                i += 1
            elif pid == 0x02:
                i += 4
            elif pid in (0x03, 0x08, 0x09):
                ln = struct.unpack("!H", data[i:i + 2])[0]
                i += 2 + ln
            else:
                raise AssertionError(f"unexpected property {pid:#x}")
        return bool(flags & 0x08), mid, seq, data[end:]

    def puback(self, mid):
        self._send(0x40, struct.pack("!H", mid))

    def close(self):
        self.sock.close()


def test_resend_keeps_its_number(broker, clients):
    broker.plugin_opts["seq_property"] = PROP
    broker.start()
    raw = RawSub(broker.port, "sq-raw", subscribe="seqp/#")
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(1, 4))
    got = [raw.publish_in() for _ in range(3)]
    assert [g[2] for g in got] == [1, 2, 3]
    raw.puback(got[0][1])  # 1 acknowledged; 2 and 3 not
    raw.close()
    raw = RawSub(broker.port, "sq-raw")
    again = [raw.publish_in() for _ in range(2)]
    assert [(g[0], g[2]) for g in again] == [(True, 2), (True, 3)], again
    for g in again:
        raw.puback(g[1])
    with clients("sq-pub") as pub:
        pub.publish_numbered(TOPIC, range(4, 5))
    assert raw.publish_in()[2] == 4
    raw.close()
