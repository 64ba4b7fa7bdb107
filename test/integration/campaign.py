"""A seeded kill -9 campaign: several workloads, each in every sync mode, each
killed at seeded moments while it runs, with the broker's default in-flight
window (max_inflight_messages 20) and subscribers that deliver QoS 2
messages at PUBLISH (rawmqtt.Receiver).

After every kill: `persist-lmdb verify` must pass on the stopped broker's
database, and the broker must start again (a refused restart is a finding,
not an error of the test). After the last round a clean segment, then every
session drains, and per subscriber and publisher:
  - every message whose PUBACK / PUBCOMP arrived is delivered (lost: 0);
  - first deliveries come in publishing order (reordered: 0);
  - a QoS 2 message comes once (QoS 2 duplicates: 0; QoS 1 repeats after a
    kill are allowed and counted).

Workloads:
  fanout    two publishers (QoS 1, QoS 2 with a persistent session, resuming
            its exchanges) to four subscribers (two QoS 1, two QoS 2) that
            come and go
  faults    the same, each subscriber behind a proxy that adds latency,
            stalls, resets links and leaves them half open (so that the
            next connection takes the session over)
  inbox     many offline sessions with a topic each, one QoS 1 publisher
            round robin over them, a few sessions connecting now and then
  retained  QoS 1 retained messages replaced and cleared on a few topics;
            after every restart each topic holds its last acknowledged value
            or a later one
  large     64 to 160 KiB payloads (LMDB overflow pages), QoS 1 and QoS 2
  admin     offline sessions of several users, with deleteAccount and
            purgeQueue through the control API while a publisher feeds them
  growth    16 KB fan-out from a 1 MiB map that grows under the load

Run standalone for as long as wanted (scripts/crash-campaign passes these):
    python3 campaign.py [--kills N] [--seed S] [--workloads a,b] [--modes m,n]
The test suite runs a bounded part (test_crash_campaign.py)."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import struct
import threading
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Broker, Client, REPO, V5, check_sequence, free_port, give_to_broker, plugin_path, run_cli, write_key
from kill_load import Publisher, SessionPublisher, finish_all, parse_payload, wait_drained
from rawmqtt import Receiver

MODES = ("tick", "periodic", "publish")
WORKLOADS = ("fanout", "faults", "inbox", "retained", "large", "admin", "growth")
KILL_AT = (0.15, 0.9)       # seconds into a round
FINAL_SEGMENT = 0.4
DRAIN_LIMIT = 60.0
CONTROL = "$CONTROL/persist-lmdb/v1"


class Sub:
    """A persistent subscriber (rawmqtt.Receiver) of some publishers' topics."""

    def __init__(self, broker: Broker, name: str, topic: str, qos: int, sources: set[str]):
        self.name = name
        self.topic = topic
        self.qos = qos
        self.sources = sources      # publisher names whose messages it must get
        self.rx = Receiver(broker.port, name)
        self.online = False
        self.required_after: float = 0.0  # only messages published after this are required
        self.deleted = False
        self.times_of_deletion: list[float] = []

    def connect(self, subscribe: bool = False) -> bool:
        present = self.rx.connect(self.topic if subscribe else None, self.qos)
        self.online = True
        return present

    def leave(self) -> None:
        if self.online:
            self.rx.close()
            self.online = False


class Workload:
    """One workload in one mode: configure, setup, rounds of traffic cut by
    kills, then the checks. Subclasses fill in subs and pubs."""

    name = ""
    rate = 400.0
    window = 10

    def __init__(self, broker: Broker, rng: random.Random):
        self.b = broker
        self.rng = rng
        self.subs: list[Sub] = []
        self.pubs: list[Publisher] = []
        self.findings: list[str] = []
        self.counts: dict[str, int] = {}

    def configure(self) -> None:
        self.b.max_inflight = None
        if not os.environ.get("PERSIST_LMDB_CAMPAIGN_DEBUG"):
            self.b.log_types = ["error", "warning", "notice", "information"]

    def setup(self) -> None:
        for s in self.subs:
            s.connect(subscribe=True)
            s.leave()
        self.b.settle()

    def during_round(self, rnd: int, until: float) -> None:
        """Connections coming and going until `until` (monotonic)."""
        while time.monotonic() < until:
            s = self.rng.choice(self.subs) if self.subs else None
            if s and not s.deleted:
                if s.online:
                    s.leave()
                else:
                    s.connect()
            time.sleep(min(max(0.0, until - time.monotonic()), self.rng.uniform(0.05, 0.3)))

    def after_restart(self) -> None:
        pass

    def close(self) -> None:
        for p in self.pubs:
            p.exit()
        for s in self.subs:
            s.leave()

    # -- the checks ------------------------------------------------------------

    def drain(self) -> None:
        for s in self.subs:
            if not s.online and not s.deleted:
                present = s.connect()
                if not present:
                    self.findings.append(f"{s.name}: session lost")
        wait_drained(lambda: sum(len(s.rx.delivered) for s in self.subs), self._all_in, DRAIN_LIMIT)

    def _all_in(self) -> bool:
        return all(not missing for _, _, missing in self._missing())

    def _by_publisher(self, s: Sub) -> tuple[dict[str, list[tuple[int, tuple]]], list[bytes]]:
        """s's deliveries of each publisher's messages, in arrival order:
        name -> [(number, (payload, qos, packet id, dup, time))]; and the
        payloads that are not numbered messages."""
        per_pub: dict[str, list[tuple[int, tuple]]] = {p.name: [] for p in self.pubs}
        bad = []
        for d in list(s.rx.delivered):
            try:
                pub, seq = parse_payload(d[0])
            except ValueError:
                bad.append(d[0])
                continue
            if pub in per_pub:
                per_pub[pub].append((seq, d))
        return per_pub, bad

    def _missing(self):
        by = {p.name: p for p in self.pubs}
        for s in self.subs:
            if s.deleted:
                continue
            per_pub, _ = self._by_publisher(s)
            for name in s.sources:
                p = by[name]
                # Published after the change (a subscription, a purge): the
                # broker read it after the change, whenever its ack was seen.
                need = {seq for seq, m in p.sent.items()
                        if m.ack is not None and m.at > s.required_after and self.wanted(s, p, seq)}
                yield s, p, check_sequence([seq for seq, _ in per_pub[name]], need).missing

    def wanted(self, s: Sub, p: Publisher, seq: int) -> bool:
        return True

    def check(self) -> None:
        by = {p.name: p for p in self.pubs}
        lost = reordered = q2dup = q1dup = delivered = 0
        for s, p, missing in self._missing():
            if missing:
                lost += len(missing)
                self.findings.append(f"{s.name} from {p.name}: {len(missing)} acknowledged messages lost, "
                                     f"first {missing[:8]}")
        for s in self.subs:
            per_pub, bad = self._by_publisher(s)
            self.findings += [f"{s.name}: payload {body[:30]!r}" for body in bad]
            for pub, entries in per_pub.items():
                c = check_sequence([seq for seq, _ in entries])
                delivered += len(c.first)
                for r in c.repeats:
                    seq, (_, qos, mid, dup, t) = entries[r]
                    _, (_, _, first_mid, _, first_t) = entries[c.first[seq]]
                    if qos == 2 and by[pub].qos == 2:
                        q2dup += 1
                        self.findings.append(f"{s.name}: QoS 2 message {pub} #{seq} delivered twice: packet id "
                                             f"{first_mid} then {mid} (DUP {int(dup)}), {t - first_t:.3f} s apart")
                    else:
                        q1dup += 1
                if self.ordered:
                    reordered += len(c.reordered)
                    self.findings += [f"{s.name}: {pub} #{entries[r][0]} after #{last}" for r, last in c.reordered]
        acked = sum(1 for p in self.pubs for m in p.sent.values() if m.ack is not None)
        self.counts.update(acked=acked, delivered=delivered, lost=lost, reordered=reordered,
                           qos2_duplicates=q2dup, qos1_repeats=q1dup)

    ordered = True


class Fanout(Workload):
    name = "fanout"

    def __init__(self, broker, rng, padding: int = 0, rate: float = 400.0):
        super().__init__(broker, rng)
        self.rate = rate
        self.pubs = [Publisher(broker, "p1", 1, "cf", self.window, rate, padding=padding),
                     SessionPublisher(broker, "p2", "cf", self.window, rate)]
        if padding:
            self.pubs[1].padding = padding
        names = {p.name for p in self.pubs}
        self.subs = [Sub(broker, f"cf-s{i}", "cf/#", 1 if i < 2 else 2, names) for i in range(4)]

    def check(self) -> None:
        super().check()
        self.counts["publisher_sessions_lost"] = sum(getattr(p, "session_lost", 0) for p in self.pubs)
        if self.counts["publisher_sessions_lost"]:
            self.findings.append(f"a persistent publisher's session was lost {self.counts['publisher_sessions_lost']} times")


class FaultProxy:
    """A loopback TCP proxy in front of the broker for one client, which
    adds latency to what it forwards and, when told, stalls, resets the
    link (RST both ways) or leaves it half open (the client's side closed,
    the broker's kept until the client's next link takes the session
    over)."""

    def __init__(self, broker_port: int, rng: random.Random):
        self.broker_port = broker_port
        self.rng = random.Random(rng.random())
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.links: list[tuple[socket.socket, socket.socket]] = []
        self.stalled_until = 0.0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.broker_port))
            except OSError:
                c.close()
                continue
            with self.lock:
                old = self.links
                self.links = [(c, b)]
            for oc, ob in old:
                # The half-open links the new one replaces.
                self._close(ob)
            threading.Thread(target=self._pump, args=(c, b), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, c), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(dst)
                return
            delay = max(self.stalled_until - time.monotonic(), 0.0) + self.rng.uniform(0, 0.005)
            time.sleep(delay)
            try:
                dst.sendall(data)
            except OSError:
                self._close(src)
                return

    @staticmethod
    def _close(s: socket.socket, rst: bool = False):
        try:
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        except OSError:
            pass

    def stall(self, seconds: float):
        self.stalled_until = time.monotonic() + seconds

    def reset(self):
        with self.lock:
            links, self.links = self.links, []
        for c, b in links:
            self._close(c, True)
            self._close(b, True)

    def half_open(self):
        """The client's side goes; the broker's stays until the next link."""
        with self.lock:
            links = list(self.links)
        for c, _ in links:
            self._close(c, True)

    def close(self):
        self.reset()
        self._close(self.listener)


class Faults(Fanout):
    """The fan-out workload with each subscriber behind a FaultProxy."""
    name = "faults"

    def __init__(self, broker, rng):
        super().__init__(broker, rng)
        self.proxies = [FaultProxy(broker.port, rng) for _ in self.subs]
        for s, px in zip(self.subs, self.proxies):
            s.rx.port = px.port

    def configure(self) -> None:
        super().configure()
        for s, px in zip(self.subs, self.proxies):
            px.broker_port = self.b.port

    def during_round(self, rnd: int, until: float) -> None:
        while time.monotonic() < until:
            i = self.rng.randrange(len(self.subs))
            s, px = self.subs[i], self.proxies[i]
            what = self.rng.choice(("toggle", "stall", "reset", "half-open"))
            if s.online and not s.rx.thread.is_alive():
                s.leave()
                s.connect()
            elif what == "toggle" or not s.online:
                s.leave() if s.online else s.connect()
            elif what == "stall":
                px.stall(self.rng.uniform(0.05, 0.3))
            elif what == "reset":
                px.reset()
                s.leave()
                self.counts["resets"] = self.counts.get("resets", 0) + 1
            else:
                px.half_open()
                s.leave()
                s.connect()   # a new link while the broker still holds the old one
                self.counts["half_open"] = self.counts.get("half_open", 0) + 1
            time.sleep(min(max(0.0, until - time.monotonic()), self.rng.uniform(0.02, 0.15)))

    def close(self) -> None:
        super().close()
        for px in self.proxies:
            px.close()


class Large(Fanout):
    name = "large"

    def __init__(self, broker, rng):
        super().__init__(broker, rng, rate=40.0)
        for p in self.pubs:
            p.padding = 0

    def configure(self) -> None:
        super().configure()
        # 64 to 160 KiB: every body an LMDB overflow value; the journal holds them.
        self.b.plugin_opts["journal_size"] = "64M"
        for p in self.pubs:
            p.padding = self.rng.randrange(64 << 10, 160 << 10)


class Growth(Fanout):
    """Fan-out of 16 KB messages from a 1 MiB map, two subscribers offline
    until the end: their queues make the map grow while the load runs."""
    name = "growth"

    def __init__(self, broker, rng):
        super().__init__(broker, rng, padding=16000, rate=300.0)
        self.coming = [s for i, s in enumerate(self.subs) if i % 2]

    def configure(self) -> None:
        super().configure()
        self.b.plugin_opts["map_size"] = "1M"

    def during_round(self, rnd: int, until: float) -> None:
        while time.monotonic() < until:
            s = self.rng.choice(self.coming)
            s.leave() if s.online else s.connect()
            time.sleep(min(max(0.0, until - time.monotonic()), self.rng.uniform(0.05, 0.3)))


class Inbox(Workload):
    name = "inbox"

    def __init__(self, broker, rng, sessions: int):
        super().__init__(broker, rng)
        self.n = sessions
        self.pubs = [Publisher(broker, "pin", 1, "inbox", self.window, 600.0,
                               topic_of=lambda seq: f"inbox/{seq % self.n}")]
        self.subs = [Sub(broker, f"in-{i}", f"inbox/{i}", 1, {"pin"}) for i in range(sessions)]

    def wanted(self, s: Sub, p: Publisher, seq: int) -> bool:
        return f"inbox/{seq % self.n}" == s.topic

    def during_round(self, rnd: int, until: float) -> None:
        while time.monotonic() < until:
            s = self.rng.choice(self.subs)
            if s.online:
                s.leave()
            else:
                s.connect()
            time.sleep(min(max(0.0, until - time.monotonic()), self.rng.uniform(0.05, 0.2)))
        for s in self.subs:
            if s.online and self.rng.random() < 0.5:
                s.leave()


class Retained(Workload):
    name = "retained"
    topics = 12

    def __init__(self, broker, rng):
        super().__init__(broker, rng)
        self.pubs = [Publisher(broker, "pret", 1, "ret", self.window, 400.0,
                               topic_of=lambda seq: f"ret/{seq % self.topics}", retain=True, clear_every=7)]
        self.restarts = 0

    def setup(self) -> None:
        self.b.settle()

    def after_restart(self) -> None:
        """Each topic holds its last acknowledged value (set or cleared) or
        one published after it."""
        self.restarts += 1
        p = self.pubs[0]
        got: dict[int, int | None] = {k: None for k in range(self.topics)}
        with Client(self.b, f"ret-check-{self.restarts}", version=V5) as c:
            c.subscribe("ret/#", 1)
            for m in c.listen(0.5):
                if m.retain:
                    got[int(m.topic.split("/")[1])] = parse_payload(m.payload)[1]
        for k in range(self.topics):
            ops = sorted(seq for seq in p.sent if seq % self.topics == k)
            acked = [seq for seq in ops if p.sent[seq].ack is not None]
            if not acked:
                continue
            allowed = {seq for seq in ops if seq >= acked[-1]}
            value = got[k]
            ok = (value in allowed) if value is not None else any(seq % 7 == 0 for seq in allowed)
            if not ok:
                self.findings.append(f"after restart {self.restarts}: ret/{k} holds "
                                     f"{value if value is not None else 'nothing'}; last acknowledged #{acked[-1]}")
        self.counts["retained_checks"] = self.restarts * self.topics

    def check(self) -> None:
        self.after_restart()
        self.counts["acked"] = sum(1 for m in self.pubs[0].sent.values() if m.ack is not None)


class Admin(Workload):
    name = "admin"
    users = 8

    def __init__(self, broker, rng):
        super().__init__(broker, rng)
        self.pubs = [Publisher(broker, "padm", 1, "adm", self.window, 400.0)]
        self.subs = [Sub(broker, f"adm-{i}", "adm/#", 1, {"padm"}) for i in range(self.users * 2)]
        self.user_of = {s.name: f"user{i // 2}" for i, s in enumerate(self.subs)}
        for s in self.subs:
            s.rx.username = self.user_of[s.name]
        self.uncertain: set[str] = set()   # users whose deletion the kill cut

    def _command(self, cmd: dict) -> bool:
        """One control API command; True when it was answered without error
        (False also when the kill cut it: it may or may not have run)."""
        try:
            with Client(self.b, "campaign-admin", version=V5, username="admin") as c:
                c.subscribe(f"{CONTROL}/response", 1)
                c.publish(CONTROL, json.dumps({"commands": [cmd]}), qos=1)
                answer = json.loads(c.wait_for(1, timeout=5)[0].payload)["responses"][0]
        except (AssertionError, OSError, ValueError, KeyError, IndexError):
            return False
        return not answer.get("error")

    def during_round(self, rnd: int, until: float) -> None:
        while time.monotonic() < until:
            time.sleep(self.rng.uniform(0.05, 0.25))
            if time.monotonic() >= until:
                return
            live = [s for s in self.subs if not s.deleted]
            if not live:
                return
            s = self.rng.choice(live)
            roll = self.rng.random()
            gone = [t for t in self.subs if t.deleted]
            if roll < 0.15 and gone:
                # A deleted account comes back: new sessions, subscribed again.
                user = self.user_of[self.rng.choice(gone).name]
                for t in self.subs:
                    if self.user_of[t.name] == user:
                        t.connect(subscribe=True)
                        t.leave()
                        t.deleted = False
                        t.required_after = time.monotonic()
                self.uncertain.discard(user)
                self.counts["accounts_recreated"] = self.counts.get("accounts_recreated", 0) + 1
            elif roll < 0.3:
                user = self.user_of[s.name]
                if self._command({"command": "deleteAccount", "username": user}):
                    for t in self.subs:
                        if self.user_of[t.name] == user:
                            t.deleted = True
                    self.counts["accounts_deleted"] = self.counts.get("accounts_deleted", 0) + 1
                else:
                    # Cut by the kill: it may have run. Nothing before now is required.
                    self.uncertain.add(user)
                    for t in self.subs:
                        if self.user_of[t.name] == user:
                            t.required_after = time.monotonic()
            else:
                answered = self._command({"command": "purgeQueue", "clientid": s.name})
                # Unanswered, it may have run: nothing before now is required.
                s.required_after = time.monotonic()
                self.counts["queues_purged"] = self.counts.get("queues_purged", 0) + answered

    def drain(self) -> None:
        uncertain = self.uncertain
        for s in self.subs:
            if self.user_of[s.name] in uncertain and not s.deleted:
                # Its deletion may have happened: both outcomes are allowed.
                present = s.connect()
                if not present:
                    s.deleted = True
                    s.leave()
        for s in self.subs:
            if s.deleted:
                present = s.connect()
                s.leave()
                if present and self.user_of[s.name] not in uncertain:
                    self.findings.append(f"{s.name}: its account was deleted, the session came back")
        super().drain()


def make(workload: str, broker: Broker, rng: random.Random, big: bool) -> Workload:
    if workload == "fanout":
        return Fanout(broker, rng)
    if workload == "faults":
        return Faults(broker, rng)
    if workload == "inbox":
        return Inbox(broker, rng, 2000 if big else 300)
    if workload == "retained":
        return Retained(broker, rng)
    if workload == "large":
        return Large(broker, rng)
    if workload == "admin":
        return Admin(broker, rng)
    if workload == "growth":
        return Growth(broker, rng)
    raise ValueError(workload)


def verify(broker: Broker) -> subprocess.CompletedProcess:
    return run_cli(broker, "verify")


def run(broker: Broker, workload: str, mode: str, kills: int, seed: int, big: bool = False) -> dict:
    """One workload in one mode with `kills` kills; returns counts and findings."""
    rng = random.Random(f"{seed}-{workload}-{mode}")
    broker.plugin_opts["sync"] = mode
    w = make(workload, broker, rng, big)
    w.configure()
    refused = verify_failed = 0
    t0 = time.monotonic()
    broker.start()
    try:
        w.setup()
        for rnd in range(1, kills + 2):
            last = rnd == kills + 1
            for p in w.pubs:
                p.resume(rnd)
            until = time.monotonic() + (FINAL_SEGMENT if last else rng.uniform(*KILL_AT))
            w.during_round(rnd, until)
            if last:
                break
            broker.kill()
            for p in w.pubs:
                p.wait_stopped("after the kill")
            for s in w.subs:
                s.leave()
            r = verify(broker)
            if r.returncode != 0:
                verify_failed += 1
                w.findings.append(f"verify after kill {rnd}: {r.stdout.strip()[-400:]} {r.stderr.strip()[-400:]}")
            try:
                broker.start()
            except AssertionError as e:
                refused += 1
                w.findings.append(f"restart after kill {rnd} refused: {str(e)[-600:]}")
                break
            w.after_restart()
        finish_all(w.pubs)
        w.drain()
        w.check()
        for s in w.subs:
            s.leave()
        broker.stop()
        r = verify(broker)
        if r.returncode != 0:
            verify_failed += 1
            w.findings.append(f"verify after the clean stop: {r.stdout.strip()[-400:]}")
    finally:
        w.close()
    log = broker.log_all()
    w.counts.update(kills=kills, refused_restarts=refused, verify_failures=verify_failed,
                    routed_again=sum(int(n) for n in re.findall(r"; (\d+) messages routed again from the journal", log)),
                    applied=sum(int(n) for n in re.findall(r"(\d+) journaled changes applied", log)),
                    resumed_at_pubrel=sum(int(n) for n in re.findall(r"(\d+) QoS 2 exchanges resumed at PUBREL", log)),
                    partial_routings_deduplicated=log.count("was held already by"),
                    map_grows=log.count("persist-lmdb: map of"),
                    seconds=round(time.monotonic() - t0, 1))
    return {"workload": workload, "mode": mode, "seed": seed, "counts": w.counts, "findings": w.findings}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=15, help="kills per workload and mode (default 15: 315 in all)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--big", action="store_true", help="the inbox workload with 2000 sessions (300 otherwise)")
    ap.add_argument("--keep", action="store_true", help="keep the directories of combinations with findings")
    a = ap.parse_args()
    total_kills, bad = 0, 0
    for workload in a.workloads.split(","):
        for mode in a.modes.split(","):
            root = Path(tempfile.mkdtemp(prefix="plmdb-campaign-", dir="/tmp"))
            os.chmod(root, 0o755)
            give_to_broker(root)
            key = root / "key.bin"
            write_key(key)
            broker = Broker(root, free_port(), key, plugin_path())
            try:
                result = run(broker, workload, mode, a.kills, a.seed, a.big)
            finally:
                broker.close()
            total_kills += result["counts"]["kills"]
            c = result["counts"]
            print(f"{workload:9} {mode:9} " + ", ".join(f"{k} {v}" for k, v in c.items()), flush=True)
            for f in result["findings"][:10]:
                print(f"    FINDING: {f}", flush=True)
            if result["findings"]:
                bad += 1
            if result["findings"] and a.keep:
                kept = REPO / "build" / "campaign-kept" / f"{workload}-{mode}-{a.seed}"
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(root, kept, symlinks=True)
                print(f"    kept {kept}")
            shutil.rmtree(root, ignore_errors=True)
    print(f"campaign seed {a.seed}: {total_kills} kills, {bad} combinations with findings")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
