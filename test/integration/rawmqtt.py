"""Just enough MQTT, over a plain socket, for tests that must see or
withhold single packets (paho hides them): CONNECT, SUBSCRIBE, PUBLISH with
a user property, the acknowledgements, and reading any packet back; and
Receiver, a subscriber that hands a QoS 2 message to its application at
PUBLISH (paho does so at PUBREL, which hides a second PUBLISH of the same
message under a new packet id)."""

import socket
import struct
import threading
import time

from harness import HOST

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13


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

    def __init__(self, port: int, client_id: str, version: int = 4, clean: bool = False,
                 username: str | None = None, receive_maximum: int | None = None):
        self.version = version
        self.sock = socket.create_connection((HOST, port), timeout=10)
        props = b""
        if version == 5:
            p = b"\x11" + struct.pack("!I", 3600)
            if receive_maximum:
                p += b"\x21" + struct.pack("!H", receive_maximum)
            props = varint(len(p)) + p
        flags = (0x02 if clean else 0x00) | (0x80 if username is not None else 0x00)
        body = mqtt_string("MQTT") + bytes([version, flags]) + struct.pack("!H", 60) + props
        body += mqtt_string(client_id) + (mqtt_string(username) if username is not None else b"")
        self.send(0x10, body)
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

    def read_pubrel(self, mid: int) -> None:
        """Reads the next packet: it must be the PUBREL of mid (a PUBLISH in
        its place is shown with its payload)."""
        kind, flags, data = self.read()
        again = f" (the PUBLISH {self.publish_in(flags, data)[5][:20]!r} again)" if kind == PUBLISH else ""
        assert kind == PUBREL, f"expected PUBREL {mid}, got packet type {kind}{again}"
        got = struct.unpack("!H", data[:2])[0]
        assert got == mid, f"expected PUBREL {mid}, got PUBREL {got}"

    def ack(self, kind: int, mid: int) -> None:
        """Sends PUBACK, PUBREC, PUBREL or PUBCOMP for mid."""
        first = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}[kind]
        self.send(first, struct.pack("!H", mid))

    def close(self) -> None:
        self.sock.close()


class Receiver:
    """A persistent MQTT 5 subscriber (session expiry one hour) that delivers
    a QoS 2 message at PUBLISH (MQTT 5, 4.3.3, method A): it answers PUBREC
    and keeps the packet id until PUBREL, and a PUBLISH with a kept id is the
    same message again, not delivered. The kept ids outlive connections, as a
    resuming client's must. QoS 1 messages are delivered and acknowledged.

    delivered: (payload, qos, packet id, dup, time.monotonic()) in order."""

    def __init__(self, port: int, client_id: str, username: str | None = None, receive_maximum: int | None = None):
        self.port = port
        self.client_id = client_id
        self.username = username
        self.receive_maximum = receive_maximum
        self.pending: set[int] = set()   # QoS 2 packet ids between PUBREC and PUBREL
        self.delivered: list[tuple[bytes, int, int, bool, float]] = []
        self.resent = 0                  # PUBLISHes of a kept packet id
        self.cond = threading.Condition()
        self.raw: RawClient | None = None
        self.thread: threading.Thread | None = None
        self.session_present = False

    def connect(self, subscribe: str | None = None, qos: int = 2) -> bool:
        self.raw = RawClient(self.port, self.client_id, version=5, username=self.username,
                             receive_maximum=self.receive_maximum)
        self.session_present = self.raw.session_present
        if subscribe:
            self.raw.subscribe(subscribe, qos)
        self.raw.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self.session_present

    def _run(self):
        raw = self.raw
        try:
            while True:
                kind, flags, data = raw.read()
                if kind == PUBLISH:
                    dup, qos, _, mid, _, body = raw.publish_in(flags, data)
                    with self.cond:
                        if qos == 2 and mid in self.pending:
                            self.resent += 1
                        else:
                            self.delivered.append((body, qos, mid, dup, time.monotonic()))
                            if qos == 2:
                                self.pending.add(mid)
                        self.cond.notify_all()
                    if qos:
                        raw.ack(PUBACK if qos == 1 else PUBREC, mid)
                elif kind == PUBREL:
                    mid = struct.unpack("!H", data[:2])[0]
                    with self.cond:
                        self.pending.discard(mid)
                    raw.ack(PUBCOMP, mid)
        except (OSError, ConnectionError, IndexError, struct.error):
            return

    def close(self) -> None:
        """Closes the socket (as a crash of the client would)."""
        if self.raw:
            try:
                self.raw.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.raw.close()
        if self.thread:
            self.thread.join(10)
        self.raw = self.thread = None

    def wait_for(self, n: int, timeout: float = 20.0) -> list:
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.delivered) >= n, timeout):
                raise AssertionError(f"{self.client_id}: {len(self.delivered)} of {n} messages within {timeout}s")
            return list(self.delivered)

    def payloads(self) -> list[bytes]:
        with self.cond:
            return [d[0] for d in self.delivered]
