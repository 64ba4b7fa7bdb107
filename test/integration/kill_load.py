"""Numbered load for the kill -9 tests (test_crash_loop.py, test_sync_modes.py,
test_strict_order.py, campaign.py): payloads that name their publisher and
number, a publisher thread that survives kills, a subscriber client that
leaves without losing an acknowledgement, the final drain, and the sorting
of what a subscriber got by publisher for the checks."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt

from harness import HOST, V5, Broker, Client, Received
from rawmqtt import PUBCOMP, PUBREC, PUBREL, RawClient, mqtt_string as mqtt_str

WAIT = 20.0               # only stops a hung test
DRAIN_QUIET = 1.0         # a finished drain: everything required, then this long quiet
DRAIN_GIVE_UP = 5.0       # a stalled drain: nothing new for this long
SHOW = 8                  # offending items shown per finding


def payload(pub: str, seq: int) -> bytes:
    # harness.parse_seq reads the leading #<seq>#; the publisher id follows.
    return b"#%d#%s" % (seq, pub.encode())


def parse_payload(p: bytes) -> tuple[str, int]:
    _, seq, pub = p.rstrip(b".").decode().split("#", 2)
    return pub, int(seq)


@dataclass
class Sent:
    round: int                      # the round (connection) it was published in
    ack: float | None = None        # time.monotonic() of its PUBACK / PUBCOMP
    refused: bool = False           # acknowledged with a failure reason code
    at: float = field(default_factory=time.monotonic)  # when it was handed to the socket


class Publisher:
    """Publishes <prefix>/<name> #1, #2, ... at one QoS (clean start; MQTT 5
    unless version says otherwise) on its own thread, at most `window`
    unacknowledged and `rate` a second, over one connection per round. When
    the connection breaks (the kill), it stops and waits for resume(); the
    next connection goes on with the next number. Messages never
    acknowledged are abandoned.

    topic_of(seq) picks another topic per message, padding fills each
    payload to that many bytes, retain sets the retain flag, and
    clear_every n publishes every n-th message as an empty retained one
    (which clears its topic's retained message)."""

    def __init__(self, broker: Broker, name: str, qos: int, prefix: str, window: int, rate: float,
                 topic_of=None, padding: int = 0, retain: bool = False, clear_every: int = 0,
                 version: int = V5):
        self.broker = broker
        self.name = name
        self.qos = qos
        self.version = version
        self.prefix = prefix
        self.window = window
        self.rate = rate
        self.topic = f"{prefix}/{name}"
        self.topic_of = topic_of or (lambda seq: self.topic)
        self.padding = padding
        self.retain = retain
        self.clear_every = clear_every
        self.sent: dict[int, Sent] = {}
        self.next_seq = 1
        self.connections = 0  # CONNACKs received
        self.connected = False  # the round's connection has had its CONNACK
        self.cond = threading.Condition()
        self.command: str | None = None  # "run", "finish", "exit"; None while idle
        self.round = 0
        self.stopped = True
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"{prefix}-{name}", daemon=True)
        self.thread.start()

    # -- main thread --------------------------------------------------------

    def resume(self, rnd: int) -> None:
        with self.cond:
            assert self.stopped
            self.round, self.command, self.stopped, self.connected = rnd, "run", False, False
            self.cond.notify_all()

    def wait_connected(self) -> None:
        """Waits until the round's connection has its CONNACK (or has ended)."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.connected or self.stopped, WAIT):
                raise AssertionError(f"publisher {self.name} did not connect within {WAIT}s")
        self._raise_error()

    def finish(self) -> None:
        """Stop publishing, wait for the outstanding acks, disconnect."""
        with self.cond:
            if not self.stopped:
                self.command = "finish"
                self.cond.notify_all()

    def wait_stopped(self, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.stopped, WAIT):
                raise AssertionError(f"publisher {self.name} did not stop within {WAIT}s ({what})")
        self._raise_error()

    def _raise_error(self) -> None:
        if self.error:
            raise AssertionError(f"publisher {self.name} failed: {self.error!r}") from self.error

    def exit(self) -> None:
        with self.cond:
            self.command = "exit"
            self.cond.notify_all()
        self.thread.join(WAIT)

    def acked(self) -> set[int]:
        return {seq for seq, s in self.sent.items() if s.ack is not None}

    # -- its thread ---------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.command in ("run", "exit"))
                if self.command == "exit":
                    return
                rnd = self.round
            try:
                self._connection(rnd)
            except BaseException as e:  # reported by wait_stopped()
                self.error = e
            with self.cond:
                if self.command != "exit":
                    self.command = None
                self.stopped = True
                self.cond.notify_all()

    def _connection(self, rnd: int) -> None:
        # The paho client lives on this thread alone: publish() writes to the
        # socket from the calling thread, so publishing from one thread while
        # another runs loop() can put two PUBLISH packets on the wire in the
        # wrong order (paho's output deque is popped without a lock).
        state = {"connack": None, "lost": False}
        acks: dict[int, tuple[float, bool]] = {}   # mid -> (time, success)
        mids: dict[int, int] = {}                  # mid -> seq

        def on_connect(client, userdata, flags, reason_code, properties):
            state["connack"] = reason_code

        def on_disconnect(client, userdata, flags, reason_code, properties):
            state["lost"] = True

        def on_publish(client, userdata, mid, reason_code, properties):
            acks[mid] = (time.monotonic(), not reason_code.is_failure)

        v5 = self.version == V5
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{self.prefix}-pub-{self.name}",
                        protocol=self.version, **({} if v5 else {"clean_session": True}))
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish

        def pump(timeout: float = 0.0) -> bool:
            """One pass of paho's loop; False once the connection is gone."""
            if not state["lost"] and c.loop(timeout=timeout) != mqtt.MQTT_ERR_SUCCESS:
                state["lost"] = True
            return not state["lost"]

        try:
            c.connect(HOST, self.broker.port, 60, **({"clean_start": True} if v5 else {}))
            deadline = time.monotonic() + WAIT
            while state["connack"] is None:
                assert pump(0.05), f"publisher {self.name}: connection closed before CONNACK"
                assert time.monotonic() < deadline, f"publisher {self.name}: no CONNACK within {WAIT}s"
            assert not state["connack"].is_failure, f"publisher {self.name}: CONNACK {state['connack']}"
            with self.cond:
                self.connections += 1
                self.connected = True
                self.cond.notify_all()
            next_at = time.monotonic()
            while self.command == "run":
                while (self.command == "run" and not state["lost"] and time.monotonic() >= next_at
                       and len(mids) - len(acks) < self.window and len(mids) < 60000):  # (mids unique)
                    next_at = max(next_at + 1 / self.rate, time.monotonic() - self.window / self.rate)
                    seq = self.next_seq
                    self.next_seq += 1
                    self.sent[seq] = Sent(rnd)
                    body = payload(self.name, seq)
                    if self.clear_every and seq % self.clear_every == 0:
                        body = b""
                    elif len(body) < self.padding:
                        body += b"." * (self.padding - len(body))
                    info = c.publish(self.topic_of(seq), body, qos=self.qos, retain=self.retain)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        state["lost"] = True  # the connection is going: the message never left
                        break
                    mids[info.mid] = seq
                if not pump(min(0.01, max(0.0, next_at - time.monotonic()))):
                    break
            if self.command == "finish" and not state["lost"]:
                deadline = time.monotonic() + WAIT
                while len(acks) < len(mids) and pump(0.05):
                    assert time.monotonic() < deadline, f"publisher {self.name}: acks missing after {WAIT}s"
                c.disconnect()
                for _ in range(20):
                    if not pump(0.05):
                        break
        finally:
            try:
                c.socket() and c.socket().close()
            except OSError:
                pass
            for mid, seq in mids.items():
                if mid in acks:
                    t, ok = acks[mid]
                    if ok:
                        self.sent[seq].ack = t
                    else:
                        self.sent[seq].refused = True


def finish_all(pubs: list[Publisher]) -> None:
    """Ends every publisher's last round: all stop publishing at once, then
    each waits for its outstanding acks and disconnects."""
    for p in pubs:
        p.finish()
    for p in pubs:
        p.wait_stopped("at the end")


class SessionPublisher(Publisher):
    """A QoS 2 Publisher with a persistent session (MQTT 5, session expiry one
    hour, over rawmqtt) that resumes its exchanges after a reconnection as a
    client resuming a session must: PUBREL again for those that got PUBREC,
    the PUBLISH again (DUP) for those that did not. A message counts as
    acknowledged at its PUBCOMP. The broker routes such a message at PUBREL,
    from the incoming entry it keeps for the session."""

    def __init__(self, broker: Broker, name: str, prefix: str, window: int, rate: float):
        super().__init__(broker, name, 2, prefix, window, rate)
        self.inflight: dict[int, list] = {}   # mid -> [seq, "pub" | "rel"]
        self.next_mid = 0
        self.session_lost = 0                 # reconnections that found no session

    def _free_mid(self) -> int:
        while True:
            self.next_mid = self.next_mid % 65535 + 1
            if self.next_mid not in self.inflight:
                return self.next_mid

    def _publish(self, raw, mid: int, seq: int, dup: bool) -> None:
        body = payload(self.name, seq)
        body = mqtt_str(self.topic) + struct.pack("!H", mid) + b"\x00" + body + b"." * (self.padding - len(body))
        raw.send(0x30 | (0x08 if dup else 0) | 0x04, body)

    def _connection(self, rnd: int) -> None:
        try:
            raw = RawClient(self.broker.port, f"{self.prefix}-pub-{self.name}", version=5)
        except (OSError, ConnectionError, AssertionError):
            return
        try:
            if not raw.session_present and self.inflight:
                self.session_lost += 1
                self.inflight.clear()
            for mid, (seq, stage) in sorted(self.inflight.items()):
                if stage == "pub":
                    self._publish(raw, mid, seq, True)
                else:
                    raw.ack(PUBREL, mid)
            next_at = time.monotonic()
            while self.command in ("run", "finish"):
                now = time.monotonic()
                if self.command == "finish" and not self.inflight:
                    raw.send(0xE0, b"\x00")
                    return
                if self.command == "run" and now >= next_at and len(self.inflight) < self.window:
                    next_at = max(next_at + 1 / self.rate, now - self.window / self.rate)
                    seq = self.next_seq
                    self.next_seq += 1
                    self.sent[seq] = Sent(rnd)
                    mid = self._free_mid()
                    self.inflight[mid] = [seq, "pub"]
                    self._publish(raw, mid, seq, False)
                    continue
                readable, _, _ = select.select([raw.sock], [], [], 0.005)
                if not readable:
                    continue
                kind, _, data = raw.read()
                mid = struct.unpack("!H", data[:2])[0]
                if kind == PUBREC and mid in self.inflight:
                    if len(data) > 2 and data[2] >= 0x80:
                        self.sent[self.inflight.pop(mid)[0]].refused = True
                        continue
                    self.inflight[mid][1] = "rel"
                    raw.ack(PUBREL, mid)
                elif kind == PUBCOMP and mid in self.inflight:
                    self.sent[self.inflight.pop(mid)[0]].ack = time.monotonic()
        except (OSError, ConnectionError, struct.error, IndexError):
            return
        finally:
            raw.close()


class SubscriberClient(Client):
    """A harness Client that notes when each message arrived, and leaves
    (disconnect()) so that the broker sees every ack it sent: the DISCONNECT
    goes out from the network thread (paho's output queue has no lock, so a
    DISCONNECT from another thread can overtake the PUBACK / PUBREC / PUBCOMP
    of a message already handed to on_message), and the socket is shut down
    for writing and read to its end before it is closed (a close with unread
    input sends a reset, and the broker may then never read the last acks).
    Without this the broker would, rightly, deliver those messages again."""

    def __init__(self, *a, **kw):
        self.times: list[float] = []
        self._leave = threading.Event()
        self._leaving = False
        super().__init__(*a, **kw)
        self._paho_sock_close = self.mqtt._sock_close
        self.mqtt._sock_close = self._sock_close

    def _sock_close(self):
        sock = self.mqtt._sock
        if sock is not None and self._leaving:
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(WAIT)
                while sock.recv(65536):
                    pass  # what the broker sent after our DISCONNECT: never delivered
            except OSError:
                pass
        self._paho_sock_close()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.times.append(time.monotonic())
        super()._on_message(client, userdata, msg)

    def _loop(self) -> int:
        if self._leave.is_set():
            self._leave.clear()
            self._leaving = True
            try:
                self.mqtt.disconnect()
            finally:
                self._leaving = False
        return self.mqtt.loop(timeout=0.02)

    def disconnect(self) -> None:
        if self._thread is None:
            return
        if not self.disconnected:
            self._leave.set()
            self._wait(lambda: self.disconnected, WAIT, "disconnect")
        self._join()
        self._leave.clear()


def wait_drained(count: Callable[[], int], complete: Callable[[], bool], limit: float = 120.0) -> None:
    """Waits until complete() holds and count() (the messages received so
    far) has not changed for DRAIN_QUIET, or count() has not changed for
    DRAIN_GIVE_UP, or for limit seconds in all."""
    last_count, last_change = -1, time.monotonic()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        n = count()
        now = time.monotonic()
        if n != last_count:
            last_count, last_change = n, now
        quiet = now - last_change
        if quiet >= DRAIN_GIVE_UP or (quiet >= DRAIN_QUIET and complete()):
            return
        time.sleep(0.1)


def drain(sources: list[Callable[[], list[Received]]], required: dict[str, set[int]]) -> None:
    """wait_drained() for subscribers that must get every required message
    (publisher name -> numbers); each source returns a subscriber's
    messages so far."""
    def done(msgs: list[Received]) -> bool:
        got: dict[str, set[int]] = {}
        for m in msgs:
            pub, seq = parse_payload(m.payload)
            got.setdefault(pub, set()).add(seq)
        return all(required[p] <= got.get(p, set()) for p in required)

    wait_drained(lambda: sum(len(f()) for f in sources), lambda: all(done(f()) for f in sources))


def by_publisher(sub: str, msgs: list[Received],
                 pubs: list[Publisher]) -> tuple[dict[str, list[tuple[int, int]]], list[str]]:
    """One subscriber's messages (in arrival order) sorted by publisher:
    name -> [(index in msgs, number)]; and a finding for each message that
    is not a publisher's numbered message on its topic."""
    topics = {p.name: p.topic for p in pubs}
    per_pub: dict[str, list[tuple[int, int]]] = {name: [] for name in topics}
    findings = []
    for i, m in enumerate(msgs):
        try:
            pub, seq = parse_payload(m.payload)
        except ValueError:
            pub, seq = None, 0
        if m.topic != topics.get(pub):
            findings.append(f"{sub}: payload {m.payload[:40]!r} on topic {m.topic}")
            continue
        per_pub[pub].append((i, seq))
    return per_pub, findings


def report(findings: list[str], what: str, groups) -> None:
    """Adds to findings, for each (label, items) of groups with items, how
    many there are and the first SHOW."""
    for label, items in groups:
        if items:
            findings.append(f"{what}: {label}: {len(items)}, first: " + "; ".join(items[:SHOW]))
