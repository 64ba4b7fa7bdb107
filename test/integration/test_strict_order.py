"""Strict per-session delivery order: a seeded, bounded randomized test.

Three publishers on their own connections (MQTT 5 QoS 1, MQTT 3.1.1 QoS 2,
MQTT 5 QoS 2) publish numbered messages on order/<name> all the time, up to
WINDOW unacknowledged, starting a new clean connection whenever the broker
comes back. Four persistent sessions subscribe to order/# (MQTT 5 with a
large session expiry and MQTT 3.1.1 clean_session=False; QoS 1 and QoS 2).
Each step the seed picks one action, then a pause:
  - a subscriber leaves (DISCONNECT, or its socket just closes) or comes back;
  - a session takeover: a second connection with the same client id
    connects while the first is still connected; the broker must close the
    first (MQTT 5: with DISCONNECT "session taken over", unless our unread
    acks make the close a reset), the second must find the session and
    continues it (a takeover drawn for an offline subscriber connects it);
  - a clean restart (SIGTERM, then start), or kill -9, then start; the
    subscribers that were connected come back.
At the end the publishers stop, every subscriber connects and drains.

Checks, per subscriber and publisher:
  1. every acknowledged message (PUBACK / PUBCOMP received) is delivered,
     kill -9 or not (no commit margin: see docs/durability.md);
  2. first deliveries come in publishing order;
  3. a QoS 2 delivery never repeats a message;
  4. a QoS 1 delivery repeats a message only where MQTT allows it: on a
     later connection, after the connection that got it first was cut
     (takeover, socket closed, broker stopped) or the broker was killed
     since (its acknowledgement may not have been committed). Counted and
     printed by cause.
Messages never acknowledged may or may not be delivered. Every reconnection
finds its session; no restart reports a rejected record or a dropped queue
entry.

Environment: PERSIST_LMDB_ORDER_SEED, PERSIST_LMDB_ORDER_STEPS. Run with -s
to see the counts. The schedule follows the seed, the traffic's timing does
not, so a failure may need a few runs to recur.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time

from harness import V311, V5, Broker, Client, Received, assert_sequence, check_sequence, numbered_payload, seqs_of
# The publishers, the subscriber's client and the final drain are shared
# with the other kill -9 tests: the client makes sure the broker sees every
# acknowledgement it sent.
from kill_load import Publisher, SubscriberClient, by_publisher, drain, finish_all, report

DEFAULT_SEED = 20250704
SEED = int(os.environ.get("PERSIST_LMDB_ORDER_SEED") or DEFAULT_SEED)
STEPS = int(os.environ.get("PERSIST_LMDB_ORDER_STEPS") or 80)

PREFIX = "order"
PUBLISHERS = (("pa", V5, 1), ("pb", V311, 2), ("pc", V5, 2))
SUBSCRIBERS = (("order-sub-a", V5, 1), ("order-sub-b", V5, 2),
               ("order-sub-c", V311, 2), ("order-sub-d", V311, 1))
SESSION_EXPIRY = 10 ** 6
ACTIONS = {"toggle": 5, "takeover": 2, "restart": 1, "kill": 1.5}
PAUSE = (0.05, 0.4)       # seconds between steps
WINDOW = 10               # messages in flight per publisher
RATE = 150                # messages per second per publisher, at most: the
                          # Python subscribers keep up, so queues stay small
WAIT = 20.0               # only stops a hung test
TAKEN_OVER = b"\xe0\x01\x8e"  # MQTT 5 DISCONNECT, reason 0x8E session taken over
# The summary's counts, in this order (zeros shown).
COUNTS = ("toggle", "takeover", "restart", "kill", "takeover ended by disconnect",
          "takeover ended by closed", "takeover ended by reset", "published", "acked", "refused",
          "publisher connections", "delivered", "qos2 duplicates", "qos1 duplicates after drop",
          "qos1 duplicates after takeover", "qos1 duplicates after restart",
          "qos1 duplicates after kill", "qos1 duplicates after leave and kill",
          "qos1 duplicates with DUP", "broker starts", "seconds")


# --------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------


class SessionClient(SubscriberClient):
    """One client object of a Subscriber: what it receives goes to the
    subscriber, marked with the number of the connection it came on."""

    def __init__(self, sub: "Subscriber"):
        self.sub = sub
        self.conn = 0
        super().__init__(sub.broker, sub.name, version=sub.version, persistent=True,
                         session_expiry=SESSION_EXPIRY if sub.version == V5 else None, connect=False)

    def _on_message(self, client, userdata, msg):
        r = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup))
        with self.sub.lock:
            self.sub.got.append(r)
            self.sub.conn_of.append((self.conn, time.monotonic()))


class Subscriber:
    """One persistent session. Its connections are numbered 1, 2, ...; ends
    holds how each one ended (leave, drop, takeover, restart, kill) and
    when. One client object carries the session from connection to
    connection, so its QoS 2 receive state (PUBREC sent, PUBREL awaited)
    survives them as MQTT requires; a takeover hands that state on."""

    def __init__(self, broker: Broker, name: str, version: int, qos: int):
        self.broker = broker
        self.name = name
        self.version = version
        self.qos = qos
        self.lock = threading.Lock()
        self.got: list[Received] = []
        self.conn_of: list[tuple[int, float]] = []  # (connection number, time) of each in got
        self.connections = 0
        self.ends: dict[int, tuple[str, float]] = {}
        self.online = False
        self.c = SessionClient(self)

    def connect(self) -> None:
        self.connections += 1
        self.c.conn = self.connections
        present = self.c.connect()
        if self.connections > 1:
            assert present, f"{self.name}: session not present at connection {self.connections}"
        self.online = True

    def _ended(self, how: str) -> None:
        self.ends[self.c.conn] = (how, time.monotonic())
        self.online = False

    def leave(self, how: str) -> None:
        """how: 'leave' (DISCONNECT, every ack read by the broker first) or
        'drop' (the socket closes without DISCONNECT)."""
        self.c.disconnect() if how == "leave" else self.c.drop()
        self._ended(how)

    def take_over(self) -> str:
        """A second connection takes the session over; returns how the
        first one ended (see _kicked)."""
        old = self.c
        old._join()  # it reads nothing more: whatever it has not handled is the new client's
        self._ended("takeover")
        self.c = SessionClient(self)
        self.c.mqtt._in_messages = old.mqtt._in_messages
        sock = old.mqtt.socket()
        try:
            self.connect()
            return self._kicked(sock)
        finally:
            sock.close()

    def _kicked(self, sock) -> str:
        """Reads the taken-over connection to its end: 'disconnect' (MQTT 5:
        it ended with DISCONNECT 0x8E), 'closed' (3.1.1) or 'reset' (the
        broker closed it with our last acks unread, which resets it and may
        discard what was still to be read)."""
        sock.settimeout(WAIT)
        tail = b""
        try:
            while chunk := sock.recv(65536):
                tail = (tail + chunk)[-len(TAKEN_OVER):]
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            raise AssertionError(f"{self.name}: first connection still open {WAIT}s after the takeover") from None
        if self.version != V5:
            return "closed"
        assert tail == TAKEN_OVER, \
            f"{self.name}: taken-over connection did not end with DISCONNECT 0x8E (last bytes {tail!r})"
        return "disconnect"

    def broker_gone(self, how: str) -> bool:
        """After the broker stopped: notes how a connection ended. True if
        the subscriber was connected."""
        if not self.online:
            return False
        with self.c.cond:
            if not self.c.cond.wait_for(lambda: self.c.disconnected, WAIT):
                raise AssertionError(f"{self.name}: did not notice the broker stop within {WAIT}s")
        self.c.disconnect()  # joins the network thread
        self._ended(how)
        return True

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.got)

    def messages(self) -> list[tuple[Received, int, float]]:
        with self.lock:
            return [(m, conn, t) for m, (conn, t) in zip(self.got, self.conn_of)]

    def close(self) -> None:
        try:
            self.c.drop()
        except OSError:
            pass


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


def check_logs(broker: Broker) -> list[str]:
    """Each start's restore summary reports nothing rejected or unrestorable,
    and no plugin line anywhere reports a rejected record or a dropped entry."""
    findings = []
    for run in range(1, broker.runs + 1):
        lines = broker.plugin_lines(run)
        summary = [l for l in lines if "persist-lmdb: restored" in l]
        if not summary or " 0 could not be restored" not in summary[0] or " 0 records rejected" not in summary[0]:
            findings.append(f"start {run}: restore summary {summary[:1]}")
        findings += [f"start {run}: {l}" for l in lines
                     if "rejected a" in l or "dropped" in l or "restore stopped" in l]
    return findings


def test_strict_order(broker):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    print(f"\nstrict order: seed {SEED}, steps {STEPS}")
    broker.log_types = ["error", "warning", "notice", "information"]
    broker.start()
    subs = [Subscriber(broker, *spec) for spec in SUBSCRIBERS]
    pubs: list[Publisher] = []
    stops: list[tuple[float, int, str, int]] = []  # (time, step, 'restart' | 'kill', broker start)
    counts = collections.Counter(dict.fromkeys(COUNTS, 0))
    step = 0
    try:
        try:
            for s in subs:
                s.connect()
                s.c.subscribe(f"{PREFIX}/#", s.qos)
            broker.settle()  # the subscriptions are committed before the first message
            pubs = [Publisher(broker, name, qos, PREFIX, WINDOW, RATE, version=version)
                    for name, version, qos in PUBLISHERS]
            # A message's round is the broker start it went to. Each step
            # begins with the publishers connected: one that a stop found
            # still connecting would fail (it does not retry).
            for p in pubs:
                p.resume(broker.runs)
            for p in pubs:
                p.wait_connected()

            for step in range(1, STEPS + 1):
                action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
                s = rng.choice(subs)
                if action == "takeover" and not s.online:
                    action = "toggle"
                counts[action] += 1
                if action == "toggle" and s.online:
                    s.leave(rng.choice(("leave", "leave", "leave", "drop")))
                elif action == "toggle":
                    s.connect()
                elif action == "takeover":
                    counts[f"takeover ended by {s.take_over()}"] += 1
                else:
                    stops.append((time.monotonic(), step, action, broker.runs))
                    broker.stop() if action == "restart" else broker.kill()
                    for p in pubs:
                        p.wait_stopped(f"after the {action}")
                    back = [b for b in subs if b.broker_gone(action)]
                    broker.start()
                    for p in pubs:
                        p.resume(broker.runs)
                    for p in pubs:
                        p.wait_connected()
                    for b in back:
                        b.connect()
                time.sleep(rng.uniform(*PAUSE))

            step = STEPS + 1  # the end
            finish_all(pubs)
            for s in subs:
                if not s.online:
                    s.connect()
        except Exception as e:
            raise AssertionError(f"seed {SEED}, step {step}: {type(e).__name__}: {e}") from e

        required = {p.name: p.acked() for p in pubs}
        drain([s.received for s in subs], required)
        for s in subs:
            s.leave("leave")
        broker.stop()
    finally:
        for p in pubs:
            p.exit()
        for s in subs:
            s.close()

    findings = check_logs(broker)
    findings += check(subs, pubs, stops, required, counts)
    counts["broker starts"] = broker.runs
    counts["seconds"] = round(time.monotonic() - t0, 1)
    summary = f"strict order, seed {SEED}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
    print(summary)
    assert not findings, (
        f"seed {SEED} (PERSIST_LMDB_ORDER_SEED={SEED} PERSIST_LMDB_ORDER_STEPS={STEPS}): "
        f"{len(findings)} finding(s):\n" + "\n".join(findings) + "\n" + summary
    )


def check(subs: list[Subscriber], pubs: list[Publisher], stops, required, counts) -> list[str]:
    findings: list[str] = []
    counts["published"] = sum(len(p.sent) for p in pubs)
    counts["acked"] = sum(len(v) for v in required.values())
    counts["refused"] = sum(1 for p in pubs for m in p.sent.values() if m.refused)
    counts["publisher connections"] = sum(p.connections for p in pubs)
    if counts["refused"]:
        findings.append(f"{counts['refused']} publishes acknowledged with a failure reason code")
    kills = [t for t, _, how, _ in stops if how == "kill"]

    def since(t: float) -> str:
        """t relative to the broker stop before it."""
        before = [(ts, step, how) for ts, step, how, _ in stops if ts <= t]
        if not before:
            return "before any restart"
        ts, step, how = before[-1]
        return f"{t - ts:.2f} s after step {step}'s {how}"

    def describe_lost(p: Publisher, seq: int) -> str:
        m = p.sent[seq]
        end = [(t, step, how) for t, step, how, run in stops if run == m.round]
        if not end:
            return f"#{seq} (acked by the last broker start)"
        t, step, how = end[0]
        lead = 1000 * (t - m.ack)  # negative: the ack was read from the socket after the signal
        return (f"#{seq} (acked by broker start {m.round}, ended by the {how} at step {step}; "
                f"ack handled {abs(lead):.1f} ms {'before' if lead >= 0 else 'after'} the signal)")

    for s in subs:
        got = s.messages()
        per_pub, bad = by_publisher(s.name, [m for m, _, _ in got], pubs)
        findings += bad
        for p in pubs:
            entries = [(seq, *got[i]) for i, seq in per_pub[p.name]]  # (number, message, connection, time)
            c = check_sequence([seq for seq, _, _, _ in entries], required[p.name], p.sent)
            want_qos = min(p.qos, s.qos)
            reordered, q2dups, q1bad = [], [], []
            for r, last in c.reordered:
                seq, _, conn, t = entries[r]
                reordered.append(f"#{seq} after #{last} (connection {conn}, {since(t)})")
            for r in c.repeats:
                seq, m, conn, t = entries[r]
                _, _, c1, t1 = entries[c.first[seq]]
                how, ended = s.ends.get(c1, ("", t))
                again = (f"#{seq} first on connection {c1} ({since(t1)})"
                         + (f", which ended by {how}," if how else "")
                         + f" again on {conn} ({since(t)}), DUP {int(m.dup)}")
                if m.qos == 2:
                    q2dups.append(again)
                elif conn > c1 and how != "leave":
                    counts[f"qos1 duplicates after {how}"] += 1
                elif conn > c1 and any(ended < k < t for k in kills):
                    counts["qos1 duplicates after leave and kill"] += 1
                else:
                    q1bad.append(again)
                counts["qos1 duplicates with DUP"] += int(m.qos == 1 and m.dup)
            counts["delivered"] += len(c.first)
            counts["qos2 duplicates"] += len(q2dups)
            what = f"{s.name} (v{'5' if s.version == V5 else '3.1.1'} QoS {s.qos}) from {p.name} (QoS {p.qos})"
            report(findings, what, (
                ("acknowledged messages lost", [describe_lost(p, q) for q in c.missing]),
                ("out of order", reordered),
                ("QoS 2 duplicates", q2dups),
                ("QoS 1 duplicates MQTT does not allow", q1bad),
                ("never published", [f"#{entries[r][0]}" for r in c.unexpected]),
                (f"delivered at the wrong QoS (want {want_qos})",
                 [f"#{seq} at QoS {m.qos}" for seq, m, _, _ in entries if seq in p.sent and m.qos != want_qos]),
            ))
    return findings


def test_publisher_that_also_receives_keeps_its_order(broker):
    """A client that publishes while its network thread acknowledges a
    flood of incoming messages puts its PUBLISHes on the wire in order (the
    harness's paho clients write from two threads), and a persistent
    subscriber gets them in that order."""
    broker.start()
    sub = Client(broker, "ord-sub", persistent=True, max_inflight=100)
    sub.subscribe("ord/seq", 1)
    pub = Client(broker, "ord-pub", max_inflight=100)
    pub.subscribe("ord/flood", 1)
    flooder = Client(broker, "ord-flood")
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            flooder.publish_many([("ord/flood", b"x" * 10, 1)] * 200)
    t = threading.Thread(target=flood)
    t.start()
    try:
        for r in range(20):
            pub.publish_many([("ord/seq", numbered_payload(r * 500 + i), 1) for i in range(500)])
    finally:
        stop.set()
        t.join()
    got = seqs_of(sub.wait_for(10000, timeout=120, topic="ord/seq"))
    assert_sequence(got, list(range(10000)))
