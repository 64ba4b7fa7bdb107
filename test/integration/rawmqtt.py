"""Just enough MQTT, over a plain socket, for tests that must see or
withhold single packets (paho hides them): CONNECT, SUBSCRIBE, PUBLISH with
a user property, the acknowledgements, and reading any packet back."""

import socket
import struct

from harness import HOST

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK = 2, 3, 4, 5, 6, 7, 9


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    """-> (value, index after it)"""
    mult, v = 1, 0
    while True:
        b = data[i]
        i += 1
        v += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return v, i


def mqtt_string(x) -> bytes:
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("!H", len(b)) + b


def user_property(name: str, value: str) -> bytes:
    return b"\x26" + mqtt_string(name) + mqtt_string(value)


class RawClient:
    """One connection. version 4 is MQTT 3.1.1, 5 is MQTT 5 (with a session
    expiry of an hour: the session outlives the connection)."""

    def __init__(self, port: int, client_id: str, version: int = 4):
        self.version = version
        self.sock = socket.create_connection((HOST, port), timeout=10)
        props = b""
        if version == 5:
            p = b"\x11" + struct.pack("!I", 3600)
            props = varint(len(p)) + p
        body = mqtt_string("MQTT") + bytes([version, 0x00]) + struct.pack("!H", 60) + props
        self.send(0x10, body + mqtt_string(client_id))
        kind, _, data = self.read()
        assert kind == CONNACK and data[1] == 0, f"CONNACK refused: {data!r}"
        self.session_present = bool(data[0] & 1)

    def send(self, first: int, body: bytes) -> None:
        self.sock.sendall(bytes([first]) + varint(len(body)) + body)

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
        props = b"\x00" if self.version == 5 else b""
        self.send(0x82, struct.pack("!H", 1) + props + mqtt_string(topic) + bytes([qos]))
        kind, _, data = self.read()
        granted = data[3] if self.version == 5 else data[2]
        assert kind == SUBACK and granted == qos, f"SUBACK: {kind} {data!r}"

    def publish(self, topic: str, mid: int, payload: bytes, qos: int, props: bytes = b"", dup: bool = False):
        """Sends a QoS 1/2 PUBLISH; -> the reason code of its PUBACK / PUBREC."""
        body = mqtt_string(topic) + struct.pack("!H", mid)
        if self.version == 5:
            body += varint(len(props)) + props
        self.send(0x30 | (0x08 if dup else 0) | (qos << 1), body + payload)
        kind, _, data = self.read()
        assert kind == (PUBACK if qos == 1 else PUBREC) and struct.unpack("!H", data[:2])[0] == mid, (kind, data)
        return data[2] if len(data) > 2 else 0

    def publish_in(self, flags: int, data: bytes):
        """A PUBLISH read: -> (dup, qos, topic, packet id, user properties, payload)."""
        tlen = struct.unpack("!H", data[:2])[0]
        topic = data[2:2 + tlen].decode()
        i = 2 + tlen
        mid = struct.unpack("!H", data[i:i + 2])[0]
        i += 2
        users = {}
        if self.version == 5:
            plen, i = read_varint(data, i)
            end = i + plen
            while i < end:
                pid = data[i]
                i += 1
                if pid == 0x26:
                    name, value = [], []
                    for out in (name, value):
                        ln = struct.unpack("!H", data[i:i + 2])[0]
                        out.append(data[i + 2:i + 2 + ln].decode())
                        i += 2 + ln
                    users[name[0]] = value[0]
                elif pid == 0x0B:
                    _, i = read_varint(data, i)
                elif pid == 0x01:
                    i += 1
                elif pid == 0x02:
                    i += 4
                elif pid in (0x03, 0x08, 0x09):
                    i += 2 + struct.unpack("!H", data[i:i + 2])[0]
                else:
                    raise AssertionError(f"unexpected property {pid:#x}")
        return bool(flags & 0x08), (flags >> 1) & 3, topic, mid, users, data[i:]

    def ack(self, kind: int, mid: int) -> None:
        """Sends PUBACK, PUBREC, PUBREL or PUBCOMP for mid."""
        first = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}[kind]
        self.send(first, struct.pack("!H", mid))

    def close(self) -> None:
        self.sock.close()
