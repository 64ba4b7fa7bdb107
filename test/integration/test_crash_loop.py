"""Seeded kill -9 crash loop under continuous traffic.

Three persistent MQTT 5 subscribers (session expiry 3600; two at QoS 1, one
at QoS 2) on crash/#, two publishers (one QoS 1, one QoS 2) publishing
numbered messages all the time (up to RATE a second, WINDOW in flight). Every
round the broker is killed with SIGKILL at a seeded moment, while a seeded
choice of subscribers is connected (some connect or leave during the round);
`persist-lmdb verify` must then pass on the stopped broker's database, and
the broker restarts on it. The publishers start a new connection after each
restart and go on with the next numbers; messages they never saw acknowledged
are abandoned. At the end every subscriber reconnects and drains.

Checks, over the whole run, per subscriber and publisher:
  1. every message whose PUBACK / PUBCOMP arrived was delivered: nothing
     acknowledged is lost (the intake journal holds what the broker
     acknowledged before the next commit; docs/durability.md);
  2. first deliveries come in publishing order; a QoS 1 message may come
     again (at-least-once after a crash; counted and reported);
  3. the QoS 2 subscriber never gets a QoS 2 message twice: an exchange cut
     after its PUBREL resumes with PUBREL (test_qos2_resume.py);
  4. messages never acknowledged may or may not be delivered.
The restart's log must show no rejected record and no dropped queue entry.

Environment: PERSIST_LMDB_CRASH_SEED (default below), PERSIST_LMDB_CRASH_ROUNDS
(default 50), PERSIST_LMDB_CRASH_DUMP (a file: every send, ack and delivery as
JSON, for analysis). Run with -s to see the counts; a failure shows them and
the seed. The schedule (kill moments, who is connected) follows the seed;
the traffic's timing does not, so a failure may need a few runs to recur.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import paho.mqtt.client as mqtt

from harness import HOST, REPO, V5, Broker, Client, Received

DEFAULT_SEED = 20250611
SEED = int(os.environ.get("PERSIST_LMDB_CRASH_SEED") or DEFAULT_SEED)
ROUNDS = int(os.environ.get("PERSIST_LMDB_CRASH_ROUNDS") or 50)

# A QoS 1 message delivered and acknowledged this long before a kill must
# not come again: its deletion was committed (a commit follows every loop
# iteration). Re-deliveries of such messages are reported.
COMMIT_MARGIN = 0.25

KILL_AT = (0.2, 1.0)      # seconds into a round at which the broker is killed
FINAL_SEGMENT = 0.5       # traffic after the last restart, before the drain
WINDOW = 16               # messages in flight per publisher
RATE = 500                # messages per second per publisher, at most: the Python
                          # subscribers keep up, so queues (and restarts) stay small
TOPIC_FILTER = "crash/#"
SUBSCRIBERS = (("crash-sub-q1a", 1), ("crash-sub-q1b", 1), ("crash-sub-q2", 2))
PUBLISHERS = (("p1", 1), ("p2", 2))
WAIT = 20.0               # only stops a hung test
DRAIN_QUIET = 1.0         # a finished drain: everything required, then this long quiet
DRAIN_GIVE_UP = 5.0       # a stalled drain: nothing new for this long
SHOW = 8                  # offending numbers shown per finding


def cli_path() -> Path:
    return Path(os.environ.get("PERSIST_LMDB_BUILD") or REPO / "build") / "persist-lmdb"


def payload(pub: str, seq: int) -> bytes:
    # harness.parse_seq reads the leading #<seq>#; the publisher id follows.
    return b"#%d#%s" % (seq, pub.encode())


def parse_payload(p: bytes) -> tuple[str, int]:
    _, seq, pub = p.decode().split("#", 2)
    return pub, int(seq)


# --------------------------------------------------------------------------
# Publishers
# --------------------------------------------------------------------------


@dataclass
class Sent:
    round: int                      # the round (connection) it was published in
    ack: float | None = None        # time.monotonic() of its PUBACK / PUBCOMP
    refused: bool = False           # acknowledged with a failure reason code


class Publisher:
    """Publishes crash/<name> #1, #2, ... at one QoS on its own thread, up to
    WINDOW unacknowledged, over one clean-start connection per round. When
    the connection breaks (the kill), it stops and waits for resume(); the
    next connection goes on with the next number."""

    def __init__(self, broker: Broker, name: str, qos: int):
        self.broker = broker
        self.name = name
        self.qos = qos
        self.topic = f"crash/{name}"
        self.sent: dict[int, Sent] = {}
        self.next_seq = 1
        self.cond = threading.Condition()
        self.command: str | None = None  # "run", "finish", "exit"; None while idle
        self.round = 0
        self.stopped = True
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"crash-{name}", daemon=True)
        self.thread.start()

    # -- main thread --------------------------------------------------------

    def resume(self, rnd: int) -> None:
        with self.cond:
            assert self.stopped
            self.round, self.command, self.stopped = rnd, "run", False
            self.cond.notify_all()

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
        if self.error:
            raise AssertionError(f"publisher {self.name} failed: {self.error!r}") from self.error

    def exit(self) -> None:
        with self.cond:
            self.command = "exit"
            self.cond.notify_all()
        self.thread.join(WAIT)

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

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"crash-pub-{self.name}",
                        protocol=V5)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_connect, c.on_disconnect, c.on_publish = on_connect, on_disconnect, on_publish

        def pump(timeout: float = 0.0) -> bool:
            """One pass of paho's loop; False once the connection is gone."""
            if not state["lost"] and c.loop(timeout=timeout) != mqtt.MQTT_ERR_SUCCESS:
                state["lost"] = True
            return not state["lost"]

        try:
            c.connect(HOST, self.broker.port, 60, clean_start=True)
            deadline = time.monotonic() + WAIT
            while state["connack"] is None:
                assert pump(0.05), f"publisher {self.name}: connection closed before CONNACK"
                assert time.monotonic() < deadline, f"publisher {self.name}: no CONNACK within {WAIT}s"
            assert not state["connack"].is_failure, f"publisher {self.name}: CONNACK {state['connack']}"
            next_at = time.monotonic()
            while self.command == "run":
                while (self.command == "run" and not state["lost"] and time.monotonic() >= next_at
                       and len(mids) - len(acks) < WINDOW and len(mids) < 60000):  # (mids unique)
                    next_at = max(next_at + 1 / RATE, time.monotonic() - WINDOW / RATE)
                    seq = self.next_seq
                    self.next_seq += 1
                    self.sent[seq] = Sent(rnd)
                    info = c.publish(self.topic, payload(self.name, seq), qos=self.qos)
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


# --------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------


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

    def _run(self):
        while not self._stop.is_set():
            if self._leave.is_set():
                self._leave.clear()
                self._leaving = True
                try:
                    self.mqtt.disconnect()
                finally:
                    self._leaving = False
            rc = self.mqtt.loop(timeout=0.02)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                with self.cond:
                    self.disconnected = True
                    self.cond.notify_all()
                return

    def disconnect(self) -> None:
        if self._thread is None:
            return
        if not self.disconnected:
            self._leave.set()
            self._wait(lambda: self.disconnected, WAIT, "disconnect")
        self._join()
        self._leave.clear()


class Subscriber:
    """One persistent session, connected and disconnected as the schedule
    says. One paho client for the whole run, so its QoS 2 receive state
    (PUBREC sent, waiting for PUBREL) survives reconnections, as MQTT
    requires of a client that resumes a session."""

    def __init__(self, broker: Broker, name: str, qos: int):
        self.name = name
        self.qos = qos
        self.c = SubscriberClient(broker, name, version=V5, persistent=True, session_expiry=3600, connect=False)
        self.online = False
        self.marks: list[int] = []  # len(received) at the end of each round

    def connect(self, rnd: int) -> None:
        present = self.c.connect()
        if rnd > 0:
            assert present, f"{self.name}: persistent session not present after the restart"
        self.online = True

    def leave(self) -> None:
        self.c.disconnect()
        self.online = False

    def after_kill(self) -> None:
        if self.online:
            with self.c.cond:
                if not self.c.cond.wait_for(lambda: self.c.disconnected, WAIT):
                    raise AssertionError(f"{self.name}: did not notice the kill within {WAIT}s")
            self.c.disconnect()  # joins the network thread
            self.online = False

    def received(self) -> list[Received]:
        return self.c.messages()

    def round_of(self, index: int) -> int:
        """The round during which the index-th message was received."""
        for rnd, mark in enumerate(self.marks, 1):
            if index < mark:
                return rnd
        return len(self.marks) + 1


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


def run_verify(broker: Broker) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(cli_path()), "--db", str(broker.db_dir), "--key-file", str(broker.key_file), "verify"],
        capture_output=True, timeout=120,
    )


def check_start_log(broker: Broker) -> None:
    log = broker.log()
    summary = [l for l in log.splitlines() if "persist-lmdb: restored" in l]
    assert summary, f"no restore summary in the log of start {broker.runs}:\n{log[-3000:]}"
    bad = [l for l in log.splitlines()
           if "persist-lmdb:" in l and ("rejected a" in l or "dropped" in l or "restore stopped" in l)]
    assert " 0 records rejected" in summary[0] and not bad, \
        f"start {broker.runs}: {summary[0]}\n" + "\n".join(bad[:10])


def plan_round(rng: random.Random, kill_at: float) -> list[tuple[float, int, str]]:
    """(time into the round, subscriber index, 'connect' | 'leave'), sorted.
    Each subscriber: online for the whole round, offline for it, connects
    during it, or leaves during it."""
    events = []
    for i in range(len(SUBSCRIBERS)):
        kind = rng.choice(("online", "online", "offline", "offline", "late", "leave"))
        if kind in ("online", "leave"):
            events.append((0.0, i, "connect"))
        if kind == "late":
            events.append((rng.uniform(0.0, kill_at), i, "connect"))
        if kind == "leave":
            events.append((rng.uniform(0.0, kill_at), i, "leave"))
    return sorted(events)


def run_schedule(subs: list[Subscriber], events, start: float, rnd: int, until: float) -> None:
    for at, i, what in events:
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if what == "connect":
            subs[i].connect(rnd)
        else:
            subs[i].leave()
    delay = start + until - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def drain(subs: list[Subscriber], required: dict[str, set[int]]) -> None:
    """Waits until every subscriber has every required message and nothing
    new came for DRAIN_QUIET, or nothing new came for DRAIN_GIVE_UP."""
    def done(s):
        got = {}
        for m in s.received():
            pub, seq = parse_payload(m.payload)
            got.setdefault(pub, set()).add(seq)
        return all(required[p] <= got.get(p, set()) for p in required)

    last_count, last_change = -1, time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        count = sum(len(s.received()) for s in subs)
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        quiet = now - last_change
        if quiet >= DRAIN_GIVE_UP or (quiet >= DRAIN_QUIET and all(done(s) for s in subs)):
            return
        time.sleep(0.1)


def test_crash_loop(broker):
    t0 = time.monotonic()
    rng = random.Random(SEED)
    assert cli_path().is_file(), f"CLI not built: {cli_path()}"
    broker.log_types = ["error", "warning", "notice", "information"]
    broker.start()

    subs = [Subscriber(broker, name, qos) for name, qos in SUBSCRIBERS]
    for s in subs:
        s.connect(0)
        s.c.subscribe(TOPIC_FILTER, s.qos)
        s.leave()
    broker.settle()  # the sessions and subscriptions are committed

    pubs = [Publisher(broker, name, qos) for name, qos in PUBLISHERS]
    kill_times: dict[int, float] = {}
    plans: list = []
    rnd = 0
    try:
        try:
            for rnd in range(1, ROUNDS + 1):
                kill_at = rng.uniform(*KILL_AT)
                events = plan_round(rng, kill_at)
                plans.append(events)
                start = time.monotonic()
                for p in pubs:
                    p.resume(rnd)
                run_schedule(subs, events, start, rnd, kill_at)

                kill_times[rnd] = time.monotonic()
                broker.kill()
                for p in pubs:
                    p.wait_stopped("after the kill")
                for s in subs:
                    s.after_kill()
                    s.marks.append(len(s.received()))

                r = run_verify(broker)
                assert r.returncode == 0, (
                    f"persist-lmdb verify exited {r.returncode} after the kill:\n"
                    f"{r.stdout.decode()}{r.stderr.decode()}"
                )
                broker.start()
                check_start_log(broker)

            # The last round ends without a kill: traffic, then a clean end.
            rnd = ROUNDS + 1
            events = plan_round(rng, FINAL_SEGMENT)
            plans.append(events)
            start = time.monotonic()
            for p in pubs:
                p.resume(rnd)
            run_schedule(subs, events, start, rnd, FINAL_SEGMENT)
            for p in pubs:
                p.finish()
            for p in pubs:
                p.wait_stopped("at the end")
            for s in subs:
                if not s.online:
                    s.connect(rnd)
        except Exception as e:
            raise AssertionError(f"seed {SEED}, round {rnd}: {type(e).__name__}: {e}") from e

        required = {
            p.name: {seq for seq, m in p.sent.items() if m.ack is not None}
            for p in pubs
        }
        drain(subs, required)
        for s in subs:
            s.leave()
        broker.stop()
        r = run_verify(broker)
        assert r.returncode == 0, (
            f"seed {SEED}: persist-lmdb verify exited {r.returncode} after the clean stop:\n"
            f"{r.stdout.decode()}{r.stderr.decode()}"
        )
    finally:
        for p in pubs:
            p.exit()

    if os.environ.get("PERSIST_LMDB_CRASH_DUMP"):
        dump(os.environ["PERSIST_LMDB_CRASH_DUMP"], subs, pubs, kill_times, plans, t0)
    findings, q2dups, counts = check(subs, pubs, kill_times, required)
    counts["seconds"] = round(time.monotonic() - t0, 1)
    summary = (f"crash loop, seed {SEED}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(summary)
    if q2dups:
        findings.append(f"{len(q2dups)} QoS 2 duplicate(s) after kills, first: " + "; ".join(q2dups[:SHOW]))
    assert not findings, (
        f"seed {SEED} (PERSIST_LMDB_CRASH_SEED={SEED} PERSIST_LMDB_CRASH_ROUNDS={ROUNDS}): "
        f"{len(findings)} finding(s):\n" + "\n".join(findings) + "\n" + summary
    )


def dump(path, subs, pubs, kill_times, plans, t0) -> None:
    """Everything the checks look at, as JSON (times relative to the start)."""
    import json

    data = {
        "seed": SEED, "rounds": ROUNDS, "kill_times": {r: t - t0 for r, t in kill_times.items()},
        "plans": plans,
        "pubs": {p.name: {seq: [m.round, None if m.ack is None else m.ack - t0, m.refused]
                          for seq, m in p.sent.items()} for p in pubs},
        "subs": {s.name: {"marks": s.marks, "received": [
            [m.topic, m.payload.decode(), m.qos, m.dup, t - t0]
            for m, t in zip(s.received(), s.c.times)]} for s in subs},
    }
    Path(path).write_text(json.dumps(data))


def check(subs: list[Subscriber], pubs: list[Publisher], kill_times, required):
    """(findings that fail the test, QoS 2 duplicates, counts)."""
    findings: list[str] = []
    all_q2dups: list[str] = []
    by_name = {p.name: p for p in pubs}
    counts = {
        "rounds": len(kill_times),
        "published": sum(len(p.sent) for p in pubs),
        "acked": sum(1 for p in pubs for m in p.sent.values() if m.ack is not None),
        "required": sum(len(v) for v in required.values()),
        "refused": sum(1 for p in pubs for m in p.sent.values() if m.refused),
        "delivered": 0,
        "qos1 duplicates": 0,
        "of which DUP-flagged": 0,
        "qos1 duplicates of old deliveries": 0,
        "qos2 duplicates": 0,
    }

    def describe(p: Publisher, seq: int) -> str:
        m = p.sent.get(seq)
        if m is None:
            return f"#{seq} (never published)"
        if m.ack is None:
            return f"#{seq} (round {m.round}, not acked)"
        if m.round in kill_times:
            return f"#{seq} (round {m.round}, acked {kill_times[m.round] - m.ack:.3f}s before the kill)"
        return f"#{seq} (round {m.round}, the last, acked)"

    for s in subs:
        msgs = s.received()
        per_pub: dict[str, list[tuple[int, int, Received]]] = {}
        for i, m in enumerate(msgs):
            try:
                pub, seq = parse_payload(m.payload)
            except ValueError:
                findings.append(f"{s.name}: unexpected payload {m.payload[:40]!r} on {m.topic}")
                continue
            if pub not in by_name or m.topic != f"crash/{pub}":
                findings.append(f"{s.name}: payload {m.payload[:40]!r} on topic {m.topic}")
                continue
            per_pub.setdefault(pub, []).append((i, seq, m))

        for p in pubs:
            seen: dict[int, int] = {}  # seq -> index of its first delivery
            last = 0
            unknown, wrong_qos, reordered, q2dups, stale = [], [], [], [], []
            want_qos = min(p.qos, s.qos)
            for i, seq, m in per_pub.get(p.name, []):
                rnd = s.round_of(i)
                if seq not in p.sent:
                    unknown.append(f"#{seq} (received in round {rnd})")
                    continue
                if m.qos != want_qos:
                    wrong_qos.append(f"#{seq} at QoS {m.qos} (received in round {rnd})")
                if seq in seen:
                    first = seen[seq]
                    r1 = s.round_of(first)
                    before = kill_times[r1] - s.c.times[first] if r1 in kill_times else None
                    again = (f"{describe(p, seq)}: first received in round {r1}"
                             + (f" {before:.3f}s before its kill" if before is not None else "")
                             + f", again in round {rnd}, DUP {int(m.dup)}")
                    if m.qos == 2 and p.qos == 2:
                        q2dups.append(again)
                    else:
                        counts["qos1 duplicates"] += 1
                        counts["of which DUP-flagged"] += int(m.dup)
                        if before is None or before > COMMIT_MARGIN:
                            stale.append(again)
                    continue
                seen[seq] = i
                if seq < last:
                    reordered.append(f"#{seq} after #{last} (received in round {rnd})")
                last = max(last, seq)
            counts["delivered"] += len(seen)
            counts["qos2 duplicates"] += len(q2dups)
            all_q2dups += [f"{s.name} from {p.name}: {d}" for d in q2dups]
            counts["qos1 duplicates of old deliveries"] += len(stale)
            if stale:
                print(f"{s.name} from {p.name}: QoS 1 re-deliveries of messages first delivered more than "
                      f"{COMMIT_MARGIN}s before a kill: {len(stale)}, first: " + "; ".join(stale[:SHOW]))
            missing = sorted(required[p.name] - seen.keys())
            what = f"{s.name} (QoS {s.qos}) from {p.name} (QoS {p.qos})"
            for label, items in (
                ("committed messages lost", [describe(p, q) for q in missing]),
                ("out of order", reordered),
                ("never published", unknown),
                (f"delivered at the wrong QoS (want {want_qos})", wrong_qos),
            ):
                if items:
                    findings.append(f"{what}: {label}: {len(items)}, first: " + "; ".join(items[:SHOW]))
    return findings, all_q2dups, counts
