"""plugin_opt_sync (tick, publish, periodic), plugin_opt_sync_interval_ms and
plugin_opt_journal_size.

The intake journal (`journal` in the database directory, a ring mapped
MAP_SHARED) receives, before the broker acknowledges it, every accepted
QoS 1 PUBLISH, every QoS 2 message when first stored for a session and
every QoS 2 PUBREL transition; after a crash the records no committed mark
covers are routed again at start-up. In `publish` mode each record is also
synced (pwrite, fdatasync) before the acknowledgement leaves.

    test_puback_order_*             strace: in publish mode every PUBACK is
                                    preceded, in the broker's thread, by a
                                    sync after the read of its PUBLISH; in
                                    tick mode none is
    test_epoch_synced_before_*      strace: the open's epoch and salt are
                                    synced before anything sealed under them
    test_publish_mode_kill_loop     seeded kill -9 moments under QoS 1 and
                                    QoS 2 load; two offline subscribers get
                                    every acknowledged message, once, in order
    test_periodic_*                 periodic mode keeps queued messages across
                                    kill -9 and a clean restart
    test_bad_sync_option_refused    bad values stop the broker, naming the option
    test_small_journal_*            a 256k journal that wraps and fills many
                                    times over loses nothing

Environment: PERSIST_LMDB_SYNC_SEED (the kill loop's seed; printed). The
kill moments follow the seed, the traffic's timing does not, so a failure
may need a few runs to recur.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from harness import (
    HOST, V311, V5, Broker, Client, assert_sequence, check_sequence, describe_status, lmdb_page_size,
    numbered_payload, sanitizer_env, seqs_of, stop_traced,
)
from kill_load import SHOW, Publisher, by_publisher, drain, finish_all, report

WAIT = 20.0  # only stops a hung test


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def opened_line(broker: Broker) -> str:
    """The plugin's "opened ... (..., sync <mode>, journal <n> KiB)" line of
    the latest start."""
    lines = [l for l in broker.plugin_lines() if "persist-lmdb: opened" in l]
    assert lines, f"no 'persist-lmdb: opened' line in the log of start {broker.runs}:\n{broker.log()[-3000:]}"
    return lines[0]


RESTORED = re.compile(r"persist-lmdb: restored .*?; (\d+) messages routed again from the journal, "
                      r"\d+ journaled changes applied, (\d+) QoS 2 exchanges resumed at PUBREL; (\d+) could not be restored, "
                      r"(\d+) records rejected")


def restore_summary(broker: Broker) -> tuple[int, int]:
    """Checks the latest start's restore summary (nothing rejected, nothing
    failed, nothing dropped) and returns (messages routed again from the
    journal, QoS 2 exchanges resumed at PUBREL)."""
    log = broker.log()
    m = RESTORED.search(log)
    assert m, f"no restore summary in the log of start {broker.runs}:\n{log[-3000:]}"
    replayed, resumed, failed, rejected = map(int, m.groups())
    bad = [l for l in broker.plugin_lines()
           if "rejected a" in l or "dropped" in l or "restore stopped" in l or "cannot" in l
           or "malformed" in l]
    assert failed == 0 and rejected == 0 and not bad, \
        f"start {broker.runs}: {m.group(0)}\n" + "\n".join(bad[:10])
    return replayed, resumed


def assert_no_journal_warnings(broker: Broker) -> None:
    """No start logged that it could not journal something (then an
    acknowledgement would have gone out with nothing durable behind it)."""
    lines = [l for l in broker.log_all().splitlines() if "persist-lmdb: cannot journal" in l]
    assert not lines, "the journal refused records:\n" + "\n".join(lines[:SHOW])


def offline_subscriber(broker: Broker, client_id: str, topic: str, qos: int) -> None:
    """A persistent MQTT 5 session subscribed to topic, left offline."""
    with Client(broker, client_id, version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe(topic, qos)


def drain_topic_seqs(broker: Broker, client_id: str, expected: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """Connects the persistent session client_id, waits for the expected
    messages (topic -> (count, QoS)), then 0.5 s more to catch duplicates,
    and returns the numbers received per topic, in arrival order. Asserts
    the session was found and each topic's messages came at its QoS."""
    with Client(broker, client_id, version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present, f"{client_id}: session lost"
        c.collect(sum(n for n, _ in expected.values()), timeout=60, quiet=0.5)
        msgs = c.messages()
    unknown = sorted({m.topic for m in msgs} - set(expected))
    assert not unknown, f"{client_id}: messages on unexpected topics {unknown}"
    wrong = [(m.topic, m.seq, m.qos) for m in msgs if m.qos != expected[m.topic][1]]
    assert not wrong, f"{client_id}: delivered at the wrong QoS: {wrong[:SHOW]}"
    return {t: seqs_of([m for m in msgs if m.topic == t]) for t in expected}


def publish_burst(broker: Broker, topics: dict[str, int], seqs: range, size: int = 0,
                  kill: bool = False) -> None:
    """Publishes numbered messages seqs on every topic (topic -> QoS), one
    clean MQTT 5 connection per topic, all in flight at once, and waits for
    every ack (PUBACK / PUBCOMP), failing on a refusal. Each paho client is
    used from this thread alone, loop() included, so its packets keep their
    order. With kill, the broker gets SIGKILL the moment the last ack has
    been read (before it can have committed much after it)."""
    acks = {"ok": 0, "refused": 0}
    conns = []

    def on_publish(client, userdata, mid, reason_code, properties):
        acks["refused" if reason_code.is_failure else "ok"] += 1

    def on_connect(client, userdata, flags, reason_code, properties):
        userdata["connack"] = reason_code

    for topic, qos in topics.items():
        state = {"connack": None}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"burst-{topic}", protocol=V5,
                        userdata=state)
        c.max_inflight_messages_set(len(seqs))
        c.max_queued_messages_set(0)
        c.on_connect, c.on_publish = on_connect, on_publish
        c.connect(HOST, broker.port, 60, clean_start=True)
        deadline = time.monotonic() + WAIT
        while state["connack"] is None:
            assert c.loop(0.05) == mqtt.MQTT_ERR_SUCCESS, f"burst {topic}: connection closed before CONNACK"
            assert time.monotonic() < deadline, f"burst {topic}: no CONNACK within {WAIT}s"
        assert not state["connack"].is_failure, f"burst {topic}: CONNACK {state['connack']}"
        conns.append((c, topic, qos))
    try:
        for c, topic, qos in conns:
            for seq in seqs:
                assert c.publish(topic, numbered_payload(seq, size), qos=qos).rc == mqtt.MQTT_ERR_SUCCESS
        total = len(seqs) * len(conns)
        deadline = time.monotonic() + 120
        while acks["ok"] + acks["refused"] < total:
            for c, topic, _ in conns:
                assert c.loop(0.002) == mqtt.MQTT_ERR_SUCCESS, f"burst {topic}: connection lost"
            assert time.monotonic() < deadline, f"burst: {acks} of {total} acks after 120 s"
        if kill:
            broker.proc.send_signal(signal.SIGKILL)
        assert acks["refused"] == 0, f"burst: {acks['refused']} of {total} messages refused"
    finally:
        for c, _, _ in conns:
            if not kill:
                c.disconnect()
                for _ in range(10):
                    if c.loop(0.02) != mqtt.MQTT_ERR_SUCCESS:
                        break
            try:
                c.socket() and c.socket().close()
            except OSError:
                pass
    if kill:
        broker.kill()  # reaps it


# --------------------------------------------------------------------------
# 1. The order of system calls: the journal synced before the PUBACK (publish mode)
# --------------------------------------------------------------------------

TRACED = "read,recvfrom,write,sendto,writev,sendmsg,msync,fdatasync,openat,pwrite64"
READS = {"read", "recvfrom"}
WRITES = {"write", "sendto", "writev", "sendmsg"}
TRACE_TOPIC = "sm/q"     # short: the PUBLISH's packet id is within strace's 16 bytes
TRACE_COUNT = 30

# "<tid> <time> <call>"; "[pid <tid>] <time> <call>" on a terminal; no tid
# while strace follows a single task.
_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)?\]?\s*(\d\d:\d\d:\d\d\.\d+)\s+(.*)$")
_UNFINISHED = re.compile(r"^(\w+)\((.*?)\s*<unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$")
_FIRST_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')


@dataclass
class Call:
    index: int         # order in which the call started, over the whole trace
    tid: int
    time: str
    name: str
    fd: int | None
    data: bytes        # the first buffer's bytes as strace shows them (up to -s)
    result: int | None
    args: str = ""

    def __str__(self):
        return f"[{self.tid} {self.time}] {self.name}({self.fd}, {self.data.hex(' ')}) = {self.result}"


def _call(index: int, tid: int, when: str, text: str) -> Call | None:
    m = _CALL.match(text)
    if not m:
        return None
    name, args, result = m.group(1), m.group(2), m.group(3)
    fd = re.match(r"\s*(\d+)", args)
    s = _FIRST_STRING.search(args)
    data = bytes.fromhex(s.group(1).replace("\\x", "")) if s else b""
    return Call(index, tid, when, name, int(fd.group(1)) if fd else None, data,
                None if result == "?" else int(result), args)


def parse_strace(text: str) -> list[Call]:
    """Calls of `strace -f -tt -xx` output, in the order they started. A call
    cut by another thread's ("<unfinished ...>" ... "<... name resumed>") is
    put back together at the place where it started."""
    calls: list[Call] = []
    pending: dict[int, tuple[int, str, str, str]] = {}  # tid -> (index, time, name, args so far)
    for n, line in enumerate(text.splitlines()):
        m = _LINE.match(line)
        if not m:
            continue
        tid, when, rest = int(m.group(1) or 0), m.group(2), m.group(3)
        u = _UNFINISHED.match(rest)
        if u:
            pending[tid] = (n, when, u.group(1), u.group(2))
            continue
        r = _RESUMED.match(rest)
        if r:
            if tid not in pending:
                continue  # started before the trace began
            index, start, name, head = pending.pop(tid)
            call = _call(index, tid, start, f"{name}({head}{r.group(2)}")
        else:
            call = _call(n, tid, when, rest)  # signals and exits do not match
        if call:
            calls.append(call)
    calls.sort(key=lambda c: c.index)
    return calls


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value, mult = 0, 1
    for i in range(pos, min(pos + 4, len(data))):
        value += (data[i] & 0x7F) * mult
        mult *= 128
        if not data[i] & 0x80:
            return value, i + 1
    return None


def publish_mid(data: bytes) -> int | None:
    """The packet id of the QoS 1 PUBLISH data starts with, else None."""
    if len(data) < 2 or data[0] >> 4 != 3 or (data[0] >> 1) & 3 != 1:
        return None
    v = _varint(data, 1)
    if not v or v[1] + 2 > len(data):
        return None
    pos = v[1]
    tlen = int.from_bytes(data[pos:pos + 2], "big")
    pos += 2 + tlen
    if pos + 2 > len(data):
        return None
    return int.from_bytes(data[pos:pos + 2], "big")


def puback_mid(data: bytes) -> int | None:
    """The packet id of the PUBACK data starts with (MQTT 3.1.1: 40 02 id;
    MQTT 5: 40 <2, 3 or more> id [reason [properties]]), else None."""
    if len(data) >= 4 and data[0] == 0x40 and 2 <= data[1] < 0x80:
        return int.from_bytes(data[2:4], "big")
    return None


@dataclass
class Ack:
    mid: int
    publish: Call | None   # the read that brought the PUBLISH in
    syncs: list[Call]     # calls of the same thread in between that made data durable
    puback: Call


def acks_in_trace(calls: list[Call]) -> list[Ack]:
    """Every PUBACK written to a socket, with the read of its PUBLISH (the
    latest read, in the writing thread, of a QoS 1 PUBLISH with that packet
    id) and the sync calls that thread made in between: msync, fdatasync, or
    a write to a descriptor opened O_DSYNC (the journal's, in publish mode)."""
    dsync_fds = {c.result for c in calls
                 if c.name == "openat" and "O_DSYNC" in c.args and (c.result or -1) >= 0}
    acks = []
    for c in calls:
        mid = puback_mid(c.data) if c.name in WRITES and (c.result or 0) > 0 else None
        if mid is None:
            continue
        thread = [x for x in calls if x.tid == c.tid and x.index < c.index]
        read_at = next((i for i in range(len(thread) - 1, -1, -1)
                        if thread[i].name in READS and (thread[i].result or 0) > 0
                        and publish_mid(thread[i].data) == mid), None)
        if read_at is None:
            acks.append(Ack(mid, None, [], c))
            continue
        syncs = [x for x in thread[read_at + 1:]
                 if (x.name in ("msync", "fdatasync") and x.result == 0)
                 or (x.name == "pwrite64" and x.fd in dsync_fds and (x.result or 0) > 0)]
        acks.append(Ack(mid, thread[read_at], syncs, c))
    return acks


def traced_acks(broker: Broker, mode: str, version: int) -> tuple[list[Ack], str]:
    """Runs TRACE_COUNT QoS 1 publishes, one at a time, to an offline
    subscriber, with the broker under strace; returns the PUBACKs found in
    the trace, and the trace's path (for messages)."""
    if not shutil.which("strace"):
        pytest.fail("strace is not installed (it is in the build root: scripts/packages.txt)")
    if os.environ.get("PERSIST_LMDB_VALGRIND"):
        pytest.skip("strace and valgrind do not stack")
    trace = broker.root / f"strace-{mode}.txt"
    broker.plugin_opts["sync"] = mode
    broker.log_types = ["error", "warning", "notice", "information"]
    broker.command_prefix = ["strace", "-f", "-tt", "-e", f"trace={TRACED}", "-xx", "-s", "16",
                             "-o", str(trace)]
    # LeakSanitizer cannot run under ptrace: with a sanitized plugin, the
    # traced broker checks accesses but not leaks.
    if sanitizer_env(broker.plugin):
        broker.extra_env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    broker.start()
    try:
        assert f"sync {mode}," in opened_line(broker), opened_line(broker)
        offline_subscriber(broker, "trace-sub", TRACE_TOPIC, 1)
        with Client(broker, "trace-pub", version=version) as p:
            for seq in range(1, TRACE_COUNT + 1):
                p.publish(TRACE_TOPIC, numbered_payload(seq), qos=1)  # waits for the PUBACK
    finally:
        rc = stop_traced(broker)
    assert rc == 0, f"traced broker exited with status {describe_status(rc)}:\n{broker.log()[-3000:]}"

    # The messages were queued for the offline session (so the journal had
    # something to keep): a start without strace delivers them.
    broker.command_prefix = []
    broker.start()
    got = drain_topic_seqs(broker, "trace-sub", {TRACE_TOPIC: (TRACE_COUNT, 1)})
    assert_sequence(got[TRACE_TOPIC], list(range(1, TRACE_COUNT + 1)), "queued messages")

    acks = acks_in_trace(parse_strace(trace.read_text(errors="replace")))
    # One QoS 1 publisher, one connection: its PUBACKs carry packet ids 1..TRACE_COUNT.
    mids = sorted(a.mid for a in acks)
    assert mids == list(range(1, TRACE_COUNT + 1)), \
        f"expected PUBACKs for packet ids 1..{TRACE_COUNT} in the trace, found {mids} ({trace})"
    lost = [a for a in acks if a.publish is None]
    assert not lost, (f"PUBACK without a read of its PUBLISH in the same thread before it: "
                      + "; ".join(str(a.puback) for a in lost[:SHOW]))
    return acks, str(trace)


@pytest.mark.parametrize("version", [V311, V5], ids=["mqtt311", "mqtt5"])
def test_puback_order_publish_mode(broker, version):
    """publish: read of the PUBLISH, the journal's sync, then the PUBACK's socket write,
    all in the broker's thread, for every message."""
    acks, trace = traced_acks(broker, "publish", version)
    unsynced = [a for a in acks if not a.syncs]
    assert not unsynced, (
        f"{len(unsynced)} of {len(acks)} PUBACKs left with no sync since the read of their PUBLISH "
        f"in the same thread; first:\n" + "\n".join(f"  {a.publish}\n  {a.puback}" for a in unsynced[:3])
    )
    threads = {a.puback.tid for a in acks}
    print(f"publish mode: {len(acks)} PUBACKs, each after a sync in thread(s) {sorted(threads)}")


def test_puback_order_tick_mode(broker):
    """tick: the journal is written without a sync, so no PUBACK waits for
    one (the same check as above fails here: it can fail, and the mode is
    what makes it pass)."""
    acks, trace = traced_acks(broker, "tick", V5)
    synced = [a for a in acks if a.syncs]
    assert not synced, (
        f"tick mode: {len(synced)} of {len(acks)} PUBACKs came after a sync; first:\n"
        + "\n".join(f"  {a.publish}\n  {a.syncs[0]}\n  {a.puback}" for a in synced[:3])
    )
    print(f"tick mode: {len(acks)} PUBACKs, none after a sync")


def _offset(call: Call) -> int:
    """The file offset of a pwrite64 (its last argument)."""
    return int(call.args.rsplit(",", 1)[1])


def test_epoch_synced_before_anything_sealed(broker):
    """An open's epoch and salt (the key everything of this run is sealed
    under) are on the disk before any record sealed under them can be: the
    open's commit is synced by itself (data.mdb's fdatasync after its meta
    page, before any other page of data.mdb is written), and before the
    journal's first synced record. Without it (the meta page is not synced
    at commit: MDB_NOMETASYNC) a crash could keep the records and lose the
    salt that opens them."""
    if not shutil.which("strace"):
        pytest.fail("strace is not installed (it is in the build root: scripts/packages.txt)")
    if os.environ.get("PERSIST_LMDB_VALGRIND"):
        pytest.skip("strace and valgrind do not stack")
    broker.plugin_opts["sync"] = "publish"
    broker.start()
    offline_subscriber(broker, "epoch-sub", TRACE_TOPIC, 1)
    broker.stop()

    trace = broker.root / "strace-epoch.txt"
    # -s 4096: whole paths.
    broker.command_prefix = ["strace", "-f", "-tt", "-e", "trace=openat,pwrite64,write,writev,pwritev,fdatasync,msync",
                             "-xx", "-s", "4096", "-o", str(trace)]
    if sanitizer_env(broker.plugin):
        broker.extra_env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    broker.start()
    try:
        with Client(broker, "epoch-pub") as p:
            for seq in range(1, 4):
                p.publish(TRACE_TOPIC, numbered_payload(seq), qos=1)
    finally:
        rc = stop_traced(broker)
    assert rc == 0, f"traced broker exited with status {describe_status(rc)}:\n{broker.log()[-3000:]}"

    calls = parse_strace(trace.read_text(errors="replace"))
    # (-xx: a path is the call's first string, in c.data.)
    data_fds = {c.result for c in calls if c.name == "openat" and c.data.endswith(b"/data.mdb")
                and (c.result or -1) >= 0}
    journal_fds = {c.result for c in calls if c.name == "openat" and c.data.endswith(b"/journal")
                   and "O_DSYNC" in c.args and (c.result or -1) >= 0}
    page = lmdb_page_size(broker.data_file.read_bytes())
    first_meta = next((c for c in calls if c.name == "pwrite64" and c.fd in data_fds and _offset(c) < 2 * page), None)
    first_record = next((c for c in calls if c.name == "pwrite64" and c.fd in journal_fds), None)
    assert first_meta and first_record, f"no commit or no synced journal record in the trace ({trace})"
    after = [c for c in calls if c.index > first_meta.index]
    sync = next((c for c in after if c.name == "fdatasync" and c.fd in data_fds and c.result == 0), None)
    assert sync, f"data.mdb is never synced after the open's commit ({trace})"
    pages = [c for c in after if c.index < sync.index and c.fd in data_fds
             and c.name in ("pwrite64", "writev", "pwritev", "write")]
    def brief(c: Call) -> str:
        return f"{c.name}(fd {c.fd}) in thread {c.tid} at {c.time}"

    assert not pages, (f"another commit wrote data.mdb ({brief(pages[0])}) before the open's commit "
                       f"({brief(first_meta)}) was synced ({brief(sync)}); {trace}")
    assert sync.index < first_record.index, \
        f"the journal's first synced record ({brief(first_record)}) came before the epoch's sync ({brief(sync)})"


# --------------------------------------------------------------------------
# 2. kill -9 under load, publish mode, offline subscribers
# --------------------------------------------------------------------------

DEFAULT_SEED = 20250612
SEED = int(os.environ.get("PERSIST_LMDB_SYNC_SEED") or DEFAULT_SEED)
KILLS = 20
KILL_AT = (0.1, 0.7)     # seconds of traffic before each kill -9
FINAL_SEGMENT = 0.4      # traffic after the last restart
WINDOW = 16              # messages in flight per publisher
RATE = 300               # messages per second per publisher, at most
LOAD_PUBLISHERS = (("p1", 1), ("p2", 2))
LOAD_SUBSCRIBERS = (("sync-sub-q1", 1), ("sync-sub-q2", 2))
LOAD_FILTER = "load/#"


def drain_load(broker: Broker, required: dict[str, set[int]]) -> dict[str, list]:
    """Connects every subscriber and drains them (kill_load.drain). Returns
    each subscriber's messages, in arrival order."""
    subs = {name: Client(broker, name, version=V5, persistent=True, session_expiry=3600)
            for name, _ in LOAD_SUBSCRIBERS}
    try:
        for name, c in subs.items():
            assert c.session_present, f"{name}: persistent session not present at the drain"
        drain([c.messages for c in subs.values()], required)
        return {name: c.messages() for name, c in subs.items()}
    finally:
        for c in subs.values():
            c.disconnect()


def check_load(received: dict[str, list], pubs: list[Publisher]) -> tuple[list[str], int]:
    """(findings, messages delivered). Per subscriber and publisher: every
    acknowledged message delivered, none twice, in publishing order, at
    min(publisher QoS, subscription QoS), none that was never published."""
    findings = []
    delivered = 0
    sub_qos = dict(LOAD_SUBSCRIBERS)
    for sub, msgs in received.items():
        per_pub, bad = by_publisher(sub, msgs, pubs)
        findings += bad
        for p in pubs:
            seqs = [seq for _, seq in per_pub[p.name]]
            c = check_sequence(seqs, p.acked(), p.sent)
            want_qos = min(p.qos, sub_qos[sub])
            delivered += len(c.first)

            def where(seq):
                s = p.sent[seq]
                return f"#{seq} (round {s.round}{', acked' if s.ack is not None else ', not acked'})"

            report(findings, f"{sub} (QoS {sub_qos[sub]}) from {p.name} (QoS {p.qos})", (
                ("acknowledged messages lost", [where(s) for s in c.missing]),
                ("duplicates", [where(seqs[k]) for k in c.repeats]),
                ("out of order", [f"#{seqs[k]} after #{last}" for k, last in c.reordered]),
                ("never published", [f"#{s}" for s in sorted({seqs[k] for k in c.unexpected})]),
                (f"delivered at the wrong QoS (want {want_qos})",
                 [f"#{seq} at QoS {msgs[i].qos}" for i, seq in per_pub[p.name] if msgs[i].qos != want_qos]),
            ))
    return findings, delivered


def test_publish_mode_kill_loop(broker):
    """KILLS seeded kill -9 moments under continuous QoS 1 and QoS 2 load,
    publish mode; the subscribers are offline throughout and drain at the
    end: every acknowledged message exactly once, in order."""
    t0 = time.monotonic()
    print(f"sync kill loop: seed {SEED} (PERSIST_LMDB_SYNC_SEED)")
    rng = random.Random(SEED)
    broker.plugin_opts["sync"] = "publish"
    broker.log_types = ["error", "warning", "notice", "information"]
    broker.start()
    assert "sync publish," in opened_line(broker), opened_line(broker)
    for name, qos in LOAD_SUBSCRIBERS:
        offline_subscriber(broker, name, LOAD_FILTER, qos)
    broker.settle()  # the sessions and subscriptions are committed

    pubs = [Publisher(broker, name, qos, "load", WINDOW, RATE) for name, qos in LOAD_PUBLISHERS]
    replayed, resumed, starts = 0, 0, []
    rnd = 0
    try:
        try:
            for rnd in range(1, KILLS + 1):
                kill_at = rng.uniform(*KILL_AT)
                for p in pubs:
                    p.resume(rnd)
                time.sleep(kill_at)
                broker.kill()
                for p in pubs:
                    p.wait_stopped("after the kill")
                broker.start()
                r, q = restore_summary(broker)
                replayed += r
                resumed += q
                starts.append(r)
            rnd = KILLS + 1
            for p in pubs:
                p.resume(rnd)
            time.sleep(FINAL_SEGMENT)
            finish_all(pubs)
        except Exception as e:
            raise AssertionError(f"seed {SEED}, round {rnd}: {type(e).__name__}: {e}") from e
        required = {p.name: p.acked() for p in pubs}
        received = drain_load(broker, required)
    finally:
        for p in pubs:
            p.exit()

    assert_no_journal_warnings(broker)
    findings, delivered = check_load(received, pubs)
    summary = (f"seed {SEED}: {KILLS} kills, published {sum(len(p.sent) for p in pubs)}, "
               f"acked {sum(len(v) for v in required.values())}, "
               f"refused {sum(1 for p in pubs for s in p.sent.values() if s.refused)}, "
               f"delivered {delivered} (over {len(LOAD_SUBSCRIBERS)} subscribers), "
               f"routed again from the journal {replayed} (per start {starts}), "
               f"{round(time.monotonic() - t0, 1)} s")
    print(summary)
    assert not findings, (f"PERSIST_LMDB_SYNC_SEED={SEED}: {len(findings)} finding(s):\n"
                          + "\n".join(findings) + "\n" + summary)


# --------------------------------------------------------------------------
# 3. periodic mode; option validation
# --------------------------------------------------------------------------

PERIODIC_TOPICS = {"per/a": 1, "per/b": 2}  # topic -> publisher QoS


@pytest.mark.parametrize("interval", ["50", "3600000"])
def test_periodic_survives_kill_and_clean_restart(broker, interval):
    """periodic: commits are not synced each time, but a process crash
    leaves them (and the journal) in the page cache. With an interval of an
    hour no sync happens during the test at all. Messages queued for an
    offline subscriber survive kill -9 (right after their acks, no settle)
    and then a clean restart, each exactly once and in order."""
    broker.plugin_opts["sync"] = "periodic"
    broker.plugin_opts["sync_interval_ms"] = interval
    broker.start()
    assert "sync periodic," in opened_line(broker), opened_line(broker)
    offline_subscriber(broker, "per-sub", "per/#", 2)

    publish_burst(broker, PERIODIC_TOPICS, range(1, 101), kill=True)
    broker.start()
    replayed_kill, _ = restore_summary(broker)
    publish_burst(broker, PERIODIC_TOPICS, range(101, 151))
    broker.restart("term")
    replayed, _ = restore_summary(broker)
    assert replayed == 0, f"a clean stop left {replayed} journal records to route again (duplicates)"

    # The subscription is QoS 2: per/a (published at QoS 1) arrives at 1, per/b at 2.
    got = drain_topic_seqs(broker, "per-sub", {t: (150, q) for t, q in PERIODIC_TOPICS.items()})
    for topic in PERIODIC_TOPICS:
        assert_sequence(got[topic], list(range(1, 151)), f"periodic mode, {topic}")
    assert_no_journal_warnings(broker)
    print(f"periodic mode, interval {interval} ms: {replayed_kill} messages routed again after the kill")


@pytest.mark.parametrize("key,value", [
    ("sync", "bogus"),
    ("sync_interval_ms", "0"),
    ("journal_size", "1k"),
    ("sync_interval_ms", "3600001"),
    ("journal_size", "5g"),
])
def test_bad_sync_option_refused(broker, key, value):
    broker.plugin_opts["sync"] = "periodic" if key == "sync_interval_ms" else "publish"
    broker.plugin_opts[key] = value
    line = broker.assert_refuses(f"plugin_opt_{key} '{value}'")
    assert "refusing to start" in line, line
    assert not (broker.db_dir / "journal").exists(), "a refused start created the journal"


# --------------------------------------------------------------------------
# 4. A small journal: wraps and fills many times over
# --------------------------------------------------------------------------

SMALL_JOURNAL = 256 * 1024
BURST = 600          # messages per topic per burst
JOURNAL_TOPICS = {"js/a": 1, "js/b": 2}  # topic -> publisher QoS
# journal.h: a 4 KiB header ("PLMDB-J1", size), then records at 16-byte
# aligned offsets: magic "JRE2" (u32 LE) | sealed length (u32 LE) | lsn (u64 BE) | sealed.
JOURNAL_HEADER = 4096
JREC_MAGIC = 0x4A524532
SEAL_OVERHEAD = 30


def journal_lsns(path: Path, at_least: int = 0) -> list[int]:
    """The lsn of every record (current or of an earlier lap) in the file
    whose sealed part holds at least at_least bytes."""
    data = path.read_bytes()
    assert data[:8] == b"PLMDB-J1", f"{path} is not a journal: {data[:8]!r}"
    assert int.from_bytes(data[8:16], "big") == len(data), "journal header size differs from the file's"
    magic = JREC_MAGIC.to_bytes(4, "little")
    return [int.from_bytes(data[off + 8:off + 16], "big")
            for off in range(JOURNAL_HEADER, len(data) - 16, 16)
            if data[off:off + 4] == magic and int.from_bytes(data[off + 4:off + 8], "little") >= at_least]


@pytest.mark.parametrize("mode,size", [("publish", 1000), ("tick", 1000), ("publish", 20000)])
def test_small_journal_wraps_without_loss(broker, mode, size):
    """journal_size 256k and bursts of ~1 KB (or 20 KB) messages, all in
    flight at once, far more than the journal holds: it wraps many times,
    and when the writer falls a whole journal behind, the broker's thread
    commits before it goes on (20 KB messages make that frequent). Burst 1,
    kill -9 the moment its last ack arrives; burst 2, clean restart: the
    offline subscriber gets every message once, in order."""
    broker.plugin_opts["sync"] = mode
    broker.plugin_opts["journal_size"] = "256k"
    broker.start()
    line = opened_line(broker)
    assert f"sync {mode}," in line and "journal 256 KiB" in line, line
    journal = broker.db_dir / "journal"
    assert journal.stat().st_size == SMALL_JOURNAL
    offline_subscriber(broker, "js-sub", "js/#", 2)

    publish_burst(broker, JOURNAL_TOPICS, range(1, BURST + 1), size, kill=True)
    broker.start()
    replayed_kill, _ = restore_summary(broker)
    publish_burst(broker, JOURNAL_TOPICS, range(BURST + 1, 2 * BURST + 1), size)
    # Every message went through the journal (one record each, at least),
    # and far fewer records fit in it: it wrapped. (Read while the broker
    # runs: a clean stop empties it.)
    total = 2 * BURST * len(JOURNAL_TOPICS)
    lsns = journal_lsns(journal)
    fit = (SMALL_JOURNAL - JOURNAL_HEADER) // (16 + size + SEAL_OVERHEAD)
    assert lsns and max(lsns) >= total, \
        f"the journal's newest record is lsn {max(lsns, default=0)}, but {total} messages were accepted"
    # The messages' records (sessions' and completed exchanges' are small).
    assert len(journal_lsns(journal, size)) <= fit < total
    broker.restart("term")
    replayed_term, _ = restore_summary(broker)
    assert replayed_term == 0, f"a clean stop left {replayed_term} journal records to route again"
    assert journal.stat().st_size == SMALL_JOURNAL, "the journal changed size"
    assert_no_journal_warnings(broker)

    got = drain_topic_seqs(broker, "js-sub", {t: (2 * BURST, q) for t, q in JOURNAL_TOPICS.items()})
    for topic in JOURNAL_TOPICS:
        assert_sequence(got[topic], list(range(1, 2 * BURST + 1)), f"{mode} mode, 256k journal, {topic}")
    print(f"{mode} mode, 256k journal: {total} messages of {size} bytes (newest lsn {max(lsns)}, "
          f"{len(lsns)} records in the file), {replayed_kill} routed again after the kill")
