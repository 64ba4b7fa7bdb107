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

Run once with each plugin_opt_queue_storage: disk (the default: the broker
hands sessions' queues back and forth) and memory (fewer rounds); and in disk
mode with queue limits and offline_ttl set so high that they never act (a
quarter of the rounds): verify then checks each session's queue tally.

Environment: PERSIST_LMDB_CRASH_SEED (default below), PERSIST_LMDB_CRASH_ROUNDS
(default 40; memory: two fifths of it, disk-limits a quarter), PERSIST_LMDB_CRASH_DUMP (a file: every
send, ack and delivery as JSON, for analysis). Run with -s to see the counts; a failure shows them and
the seed. The schedule (kill moments, who is connected) follows the seed;
the traffic's timing does not, so a failure may need a few runs to recur.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from harness import Broker, Received, V5, check_sequence, cli_path, run_cli
from kill_load import SHOW, WAIT, Publisher, SubscriberClient, by_publisher, drain, finish_all, report

DEFAULT_SEED = 20250611
SEED = int(os.environ.get("PERSIST_LMDB_CRASH_SEED") or DEFAULT_SEED)
ROUNDS = int(os.environ.get("PERSIST_LMDB_CRASH_ROUNDS") or 40)

# A QoS 1 message delivered and acknowledged this long before a kill must
# not come again: its deletion was committed (commits follow each other
# plugin_opt_commit_interval_ms apart, 100 ms by default). Re-deliveries of
# such messages are reported.
COMMIT_MARGIN = 0.25

KILL_AT = (0.2, 1.0)      # seconds into a round at which the broker is killed
FINAL_SEGMENT = 0.5       # traffic after the last restart, before the drain
WINDOW = 16               # messages in flight per publisher
RATE = 500                # messages per second per publisher, at most: the Python
                          # subscribers keep up, so queues (and restarts) stay small
TOPIC_FILTER = "crash/#"
SUBSCRIBERS = (("crash-sub-q1a", 1), ("crash-sub-q1b", 1), ("crash-sub-q2", 2))
PUBLISHERS = (("p1", 1), ("p2", 2))


# --------------------------------------------------------------------------
# Subscribers (the publishers are kill_load.Publisher)
# --------------------------------------------------------------------------


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
    return run_cli(broker, "verify", text=False)


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


@pytest.mark.parametrize("storage", ["disk", "disk-limits", "memory"])
def test_crash_loop(broker, storage):
    rounds = {"disk": ROUNDS, "disk-limits": ROUNDS // 4, "memory": ROUNDS * 2 // 5}[storage] or 1
    broker.plugin_opts["queue_storage"] = storage.split("-")[0]
    if storage == "disk-limits":
        # Queue limits and expiry that never act: their tallies are kept,
        # and verify checks each against its queue after every kill.
        broker.plugin_opts["max_queued_messages"] = "1000000"
        broker.plugin_opts["offline_ttl"] = "7d"
    # The broker's default in-flight window (20): restarts differ past it.
    broker.max_inflight = None
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

    pubs = [Publisher(broker, name, qos, "crash", WINDOW, RATE) for name, qos in PUBLISHERS]
    kill_times: dict[int, float] = {}
    plans: list = []
    rnd = 0
    try:
        try:
            for rnd in range(1, rounds + 1):
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
            rnd = rounds + 1
            events = plan_round(rng, FINAL_SEGMENT)
            plans.append(events)
            start = time.monotonic()
            for p in pubs:
                p.resume(rnd)
            run_schedule(subs, events, start, rnd, FINAL_SEGMENT)
            finish_all(pubs)
            for s in subs:
                if not s.online:
                    s.connect(rnd)
        except Exception as e:
            raise AssertionError(f"seed {SEED}, round {rnd}: {type(e).__name__}: {e}") from e

        required = {
            p.name: p.acked()
            for p in pubs
        }
        drain([s.received for s in subs], required)
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
        dump(os.environ["PERSIST_LMDB_CRASH_DUMP"], subs, pubs, kill_times, plans, t0, rounds)
    findings, q2dups, counts = check(subs, pubs, kill_times, required)
    counts["seconds"] = round(time.monotonic() - t0, 1)
    summary = (f"crash loop, seed {SEED}, queue_storage {storage}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(summary)
    if q2dups:
        findings.append(f"{len(q2dups)} QoS 2 duplicate(s) after kills, first: " + "; ".join(q2dups[:SHOW]))
    assert not findings, (
        f"seed {SEED}, queue_storage {storage} (PERSIST_LMDB_CRASH_SEED={SEED} PERSIST_LMDB_CRASH_ROUNDS={ROUNDS}): "
        f"{len(findings)} finding(s):\n" + "\n".join(findings) + "\n" + summary
    )


def dump(path, subs, pubs, kill_times, plans, t0, rounds) -> None:
    """Everything the checks look at, as JSON (times relative to the start)."""
    import json

    data = {
        "seed": SEED, "rounds": rounds, "kill_times": {r: t - t0 for r, t in kill_times.items()},
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
        per_pub, bad = by_publisher(s.name, msgs, pubs)
        findings += bad
        for p in pubs:
            entries = per_pub[p.name]  # (index in msgs, number)
            c = check_sequence([seq for _, seq in entries], required[p.name], p.sent)
            want_qos = min(p.qos, s.qos)
            reordered, q2dups, stale = [], [], []
            for r, last in c.reordered:
                i, seq = entries[r]
                reordered.append(f"#{seq} after #{last} (received in round {s.round_of(i)})")
            for r in c.repeats:
                i, seq = entries[r]
                m = msgs[i]
                first = entries[c.first[seq]][0]
                r1 = s.round_of(first)
                before = kill_times[r1] - s.c.times[first] if r1 in kill_times else None
                again = (f"{describe(p, seq)}: first received in round {r1}"
                         + (f" {before:.3f}s before its kill" if before is not None else "")
                         + f", again in round {s.round_of(i)}, DUP {int(m.dup)}")
                if m.qos == 2 and p.qos == 2:
                    q2dups.append(again)
                else:
                    counts["qos1 duplicates"] += 1
                    counts["of which DUP-flagged"] += int(m.dup)
                    if before is None or before > COMMIT_MARGIN:
                        stale.append(again)
            counts["delivered"] += len(c.first)
            counts["qos2 duplicates"] += len(q2dups)
            all_q2dups += [f"{s.name} from {p.name}: {d}" for d in q2dups]
            counts["qos1 duplicates of old deliveries"] += len(stale)
            if stale:
                print(f"{s.name} from {p.name}: QoS 1 re-deliveries of messages first delivered more than "
                      f"{COMMIT_MARGIN}s before a kill: {len(stale)}, first: " + "; ".join(stale[:SHOW]))
            report(findings, f"{s.name} (QoS {s.qos}) from {p.name} (QoS {p.qos})", (
                ("committed messages lost", [describe(p, q) for q in c.missing]),
                ("out of order", reordered),
                ("never published", [f"#{seq} (received in round {s.round_of(i)})"
                                     for i, seq in (entries[r] for r in c.unexpected)]),
                (f"delivered at the wrong QoS (want {want_qos})",
                 [f"#{seq} at QoS {msgs[i].qos} (received in round {s.round_of(i)})"
                  for i, seq in entries if seq in p.sent and msgs[i].qos != want_qos]),
            ))
    return findings, all_q2dups, counts
