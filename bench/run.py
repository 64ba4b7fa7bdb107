#!/usr/bin/env python3
"""persist-lmdb benchmarks. Benchmarks are not tests: they measure, they do not judge.

Runs the same Mosquitto binary with several persistence setups, interleaved
over several rounds (setup order rotated each round), and reports medians:

  none      no persistence
  snapshot  Mosquitto's own snapshot persistence (persistence true; saved on shutdown)
  sqlite    the stock persist-sqlite plugin, its defaults (flush_period 5 s, sync normal)
  lmdb      persist-lmdb, its defaults (sync tick)
  sqlite-flush0  (only when asked for) persist-sqlite, plugin_opt_flush_period 0

Scenario A (offline fan-out): K offline persistent subscribers, one windowed
QoS 1 publisher, N messages -> acknowledged publish rate.
Scenario B (restart): K offline subscribers x M queued messages, SIGTERM, start
again -> time from process start to first CONNACK, RSS after restart, data on
disk; then the subscribers drain everything (rate, and every message checked).

Started by bench/run.sh (which builds bench/loadgen); see docs/benchmarks.md.
"""
import argparse
import atexit
import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQLITE_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto/mosquitto_persist_sqlite.so"
DEFAULT_SETUPS = ["none", "snapshot", "sqlite", "lmdb"]
ALL_SETUPS = DEFAULT_SETUPS + ["sqlite-flush0"]
RESTART_SETUPS = ["snapshot", "sqlite", "sqlite-flush0", "lmdb"]  # `none` has nothing to restore

_brokers = []  # live Popen objects, killed on exit


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def kill_brokers():
    for p in list(_brokers):
        if p.poll() is None:
            p.kill()
            p.wait()
        _brokers.remove(p)


def _on_signal(signum, frame):
    kill_brokers()
    sys.exit(128 + signum)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_kv(line):
    out = {}
    for tok in line.split()[1:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def mem_kib(pid):
    """VmRSS, RssAnon and RssFile (+RssShmem) of a process, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1])
    return out


def cpu_secs(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_usage(path):
    """(allocated bytes, apparent bytes) of the files under path."""
    alloc = apparent = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


class BenchError(Exception):
    pass


class Broker:
    """One broker setup with its own fresh directory and port."""

    def __init__(self, setup, workdir):
        self.setup = setup
        self.dir = workdir
        self.data = os.path.join(workdir, "data")
        self.port = free_port()
        self.conf = os.path.join(workdir, "mosquitto.conf")
        self.log = os.path.join(workdir, "broker.log")
        self.proc = None
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(self.data)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "user root",
            "max_queued_messages 0",
            "max_queued_bytes 0",
            f"log_dest file {self.log}",
        ] + args.conf_extra
        if setup == "snapshot":
            lines += ["persistence true", f"persistence_location {self.data}"]
        elif setup in ("sqlite", "sqlite-flush0"):
            lines += [f"global_plugin {args.sqlite_plugin}", f"persistence_location {self.data}"]
            if setup == "sqlite-flush0":
                lines += ["plugin_opt_flush_period 0"]
        elif setup == "lmdb":
            key = os.path.join(workdir, "key")
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
            lines += [f"global_plugin {args.lmdb_plugin}", f"plugin_opt_key_file {key}",
                      f"plugin_opt_db_path {self.data}"]
        elif setup != "none":
            raise ValueError(setup)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        t0 = time.time()
        with open(os.path.join(self.dir, "stdout.log"), "ab") as out:
            self.proc = subprocess.Popen([args.mosquitto, "-c", self.conf],
                                         stdout=out, stderr=subprocess.STDOUT)
        _brokers.append(self.proc)
        return t0

    def stop(self):
        """SIGTERM and wait: returns the seconds the broker took to exit."""
        if not self.proc or self.proc.poll() is not None:
            raise BenchError(f"{self.setup}: broker already exited\n{self.log_tail()}")
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"{self.setup}: broker did not stop within {args.timeout} s")
        finally:
            _brokers.remove(self.proc)
        secs = time.monotonic() - t0
        if rc != 0:
            raise BenchError(f"{self.setup}: broker exited {rc}\n{self.log_tail()}")
        self.proc = None
        return secs

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc in _brokers:
            _brokers.remove(self.proc)
        self.proc = None

    def log_tail(self, n=15):
        text = ""
        for path in (self.log, os.path.join(self.dir, "stdout.log")):
            try:
                with open(path, errors="replace") as f:
                    text += "".join(f.readlines()[-n:])
            except OSError:
                pass
        return text

    def loadgen(self, cmd, *opts):
        """Runs one loadgen command; stops it early if the broker dies meanwhile."""
        argv = [args.loadgen, cmd, "-p", str(self.port), "-T", str(args.timeout), *map(str, opts)]
        if args.verbose:
            log("  $ " + shlex.join(argv))
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            deadline = time.monotonic() + args.timeout + 30
            while True:
                try:
                    out, err = p.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                    p.kill()
                    out, err = p.communicate()
                    why = "timed out" if time.monotonic() > deadline else "broker exited"
                    raise BenchError(f"{self.setup}: loadgen {cmd}: {why} "
                                     f"(broker rc {self.proc.poll() if self.proc else None}); "
                                     f"log tail:\n{self.log_tail()}")
        line = out.strip().splitlines()[-1] if out.strip() else ""
        if args.verbose and line:
            log("    " + line)
        if p.returncode != 0:
            alive = self.proc is not None and self.proc.poll() is None
            raise BenchError(f"{self.setup}: loadgen {cmd} failed (rc {p.returncode}): {line}\n"
                             f"{err.strip()}\nbroker {'running' if alive else 'exited'}; "
                             f"log tail:\n{self.log_tail()}")
        return parse_kv(line)

    def wait_ready(self, since):
        return self.loadgen("wait-connect", "-S", f"{since:.6f}")["secs"]

    def cleanup(self):
        self.kill()
        if not args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_a(setup, rnd):
    b = Broker(setup, os.path.join(args.data_dir, f"A-{setup}-r{rnd}"))
    try:
        os.sync()
        b.wait_ready(b.start())
        b.loadgen("subscribe-offline", "-k", args.subscribers)
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", args.messages, "-s", args.size, "-q", 1, "-w", args.window)
        cpu = cpu_secs(b.proc.pid) - cpu0
        mem = mem_kib(b.proc.pid)
        b.stop()
        return {"publish_rate": r["rate"], "publish_secs": r["secs"],
                "broker_cpu_us_per_msg": cpu * 1e6 / args.messages,
                "broker_cpu_share": 100 * cpu / r["secs"] if r["secs"] > 0 else None,
                "rss_kib": mem.get("VmRSS"), "rss_file_kib": mem.get("RssFile")}
    finally:
        b.cleanup()


def run_b(setup, rnd):
    b = Broker(setup, os.path.join(args.data_dir, f"B-{setup}-r{rnd}"))
    res = {}
    try:
        os.sync()
        b.wait_ready(b.start())
        b.loadgen("subscribe-offline", "-k", args.subscribers)
        r = b.loadgen("publish", "-n", args.restart_messages, "-s", args.size, "-q", 1,
                      "-w", args.window)
        res["load_rate"] = r["rate"]
        res["rss_loaded_kib"] = mem_kib(b.proc.pid).get("VmRSS")
        res["stop_secs"] = b.stop()
        alloc, apparent = disk_usage(b.data)
        res["disk_bytes"] = alloc
        res["disk_apparent_bytes"] = apparent
        os.sync()
        # Drop clean page cache so that the restart reads the disk, where allowed.
        if args.drop_caches:
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("1\n")
                res["cold_cache"] = 1
            except OSError:
                res["cold_cache"] = 0
        res["restart_secs"] = b.wait_ready(b.start())
        mem = mem_kib(b.proc.pid)
        res["rss_restart_kib"] = mem.get("VmRSS")
        res["rss_restart_file_kib"] = mem.get("RssFile")
        if rnd < args.drain_rounds:
            d = b.loadgen("drain", "-k", args.subscribers, "-n", args.restart_messages)
            res["drain_rate"] = d["rate"]
            res["drain_secs"] = d["secs"]
            res["drain_sessions"] = d["sessions"]
            res["drain_dups"] = d["dups"]
            res["drain_out_of_order"] = d["out_of_order"]
        b.stop()
        return res
    finally:
        b.cleanup()


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "secs":
        return f"{v:.2f}"
    if kind == "mib":
        return f"{v:,.1f}"
    if kind == "pct":
        return f"{v:.0f}"
    if kind == "us":
        return f"{v:,.1f}"
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def table(results, scenario, setups, metrics, ratio_pairs):
    head = ["metric"] + setups + [f"{x}/{y}" for x, y in ratio_pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, kind, scale in metrics:
        med = {}
        for s in setups:
            vals = [r.get(key) for r in results[scenario].get(s, []) if "error" not in r]
            m = median(vals)
            med[s] = m * scale if m is not None else None
        row = [label] + [fmt(med[s], kind) for s in setups]
        row += [ratio(med.get(x), med.get(y)) for x, y in ratio_pairs]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def samples(results, scenario, setups, key, kind, scale=1):
    out = []
    for s in setups:
        vals = []
        for r in results[scenario].get(s, []):
            vals.append("failed" if "error" in r else fmt(r.get(key, 0) * scale, kind))
        out.append(f"{s}: {', '.join(vals)}")
    return "; ".join(out)


def machine():
    mosq = subprocess.run([args.mosquitto, "-h"], capture_output=True, text=True).stdout
    mosq = mosq.splitlines()[0] if mosq else "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    fs = "?"
    try:
        best = ""
        data = os.path.realpath(args.data_dir)
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if data.startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                    best, fs = mnt, f"{typ} ({dev})"
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "kernel": os.uname().release, "cpu": cpu,
            "mosquitto": mosq, "data_fs": fs}


def report(results, info):
    a_setups = [s for s in args.setups if results["A"].get(s)]
    b_setups = [s for s in args.setups if s in RESTART_SETUPS and results["B"].get(s)]
    a_pairs = [p for p in [("lmdb", "sqlite"), ("lmdb", "sqlite-flush0"), ("lmdb", "none")] if p[0] in a_setups and p[1] in a_setups]
    b_pairs = [p for p in [("lmdb", "sqlite"), ("lmdb", "sqlite-flush0"), ("lmdb", "snapshot")] if p[0] in b_setups and p[1] in b_setups]
    mib = 1 / 1024
    out = []
    out.append("# Benchmarks\n")
    out.append("Benchmarks are not tests: they measure one machine at one moment and judge nothing. "
               "The test suite is `scripts/test`. Numbers from a shared or virtual machine are noisy; "
               "compare setups measured in the same run only.\n")
    out.append(f"Run {info['date']} ({'quick run' if args.quick else 'full run'}), "
               f"{args.rounds} round(s), setups interleaved and their order rotated each round; "
               "the tables give medians.\n")
    out.append(f"- machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}, "
               f"load average {info['load_before']} before / {info['load_after']} after the run")
    out.append(f"- broker: {info['mosquitto']} (the same binary for every setup), "
               "in the Debian unstable root of `scripts/root.sh`")
    out.append(f"- data directories: `{os.path.relpath(args.data_dir, SRC)}` on {info['data_fs']} "
               "(the real disk, not tmpfs); a fresh directory for every broker, "
               "`sync` before every measurement")
    if info.get("lmdb_plugin"):
        how = (", by bench/run.sh from the working tree (RelWithDebInfo)"
               if info["lmdb_plugin"].startswith("build-bench/") else "")
        out.append(f"- persist-lmdb: `{info['lmdb_plugin']}`, built {info['lmdb_plugin_mtime']}{how}")
    out.append(f"- command: `{info['command']}` ({info['elapsed']:.0f} s)\n")
    out.append("Setups (same broker binary; every config has `max_queued_messages 0` and "
               "`max_queued_bytes 0`, i.e. no queue limit, "
               + ("".join(f"`{c}`, " for c in args.conf_extra)) + "and otherwise broker defaults):\n")
    out.append("- `none`: no persistence.")
    out.append("- `snapshot`: `persistence true` — Mosquitto's own persistence, an in-memory "
               "database saved to `mosquitto.db` on shutdown (and every `autosave_interval`, 1800 s): "
               "messages since the last save are lost on a crash.")
    out.append("- `sqlite`: the stock `mosquitto_persist_sqlite.so` with its defaults: WAL, "
               "`synchronous=NORMAL`, one transaction committed every `flush_period` (5 s): "
               "up to 5 s of messages are lost on a crash, and a commit is not fsynced (WAL checkpoints are).")
    if "sqlite-flush0" in args.setups:
        out.append("- `sqlite-flush0`: persist-sqlite with `plugin_opt_flush_period 0`: a commit per "
                   "broker loop iteration (still not fsynced).")
    out.append("- `lmdb`: persist-lmdb with its defaults (`plugin_opt_sync tick`: the changes of one "
               "broker loop iteration in one LMDB write transaction, fdatasync'd at commit; see "
               "[durability.md](durability.md)).\n")

    if a_setups:
        out.append(f"## A. Offline fan-out\n")
        out.append(f"{args.subscribers} offline persistent subscribers (MQTT 3.1.1, clean session off, "
                   f"QoS 1); one publisher sends {args.messages:,} QoS 1 messages of {args.size} bytes, "
                   f"at most {args.window} unacknowledged; rate = messages / time until the last PUBACK. "
                   f"Each message is queued for every subscriber ({args.subscribers * args.messages:,} "
                   "client messages).\n")
        out.append(table(results, "A", a_setups, [
            ("publish_rate", "publish rate (msg/s, acked)", "rate", 1),
            ("broker_cpu_us_per_msg", "broker CPU time per published message (µs)", "us", 1),
            ("broker_cpu_share", "broker CPU time / publish wall time (%)", "pct", 1),
            ("rss_kib", "broker RSS after publishing (MiB)", "mib", mib),
            ("rss_file_kib", "of which file-backed (MiB)", "mib", mib),
        ], a_pairs))
        out.append(f"\nPer round (msg/s): {samples(results, 'A', a_setups, 'publish_rate', 'rate')}.\n")
        if "lmdb" in a_setups and "sqlite" in a_setups:
            lm = median([r.get("publish_rate") for r in results["A"]["lmdb"] if "error" not in r])
            sq = median([r.get("publish_rate") for r in results["A"]["sqlite"] if "error" not in r])
            if lm is not None and sq is not None:
                verdict = "meets" if lm >= sq else "does NOT meet"
                out.append(f"Target (persist-lmdb publish rate >= persist-sqlite defaults, same run): "
                           f"{lm:,.0f} vs {sq:,.0f} msg/s — {verdict} it in this run.\n")
    if b_setups:
        total = args.subscribers * args.restart_messages
        out.append("## B. Restart with queued messages\n")
        out.append(f"{args.subscribers} offline subscribers x {args.restart_messages:,} queued QoS 1 "
                   f"messages of {args.size} bytes = {total:,} queued client messages. The broker is "
                   "stopped with SIGTERM and started again; restart = time from starting the process "
                   "until a CONNECT is answered with CONNACK (polled every 5 ms). "
                   + (f"Then (in the first {min(args.drain_rounds, args.rounds)} round(s)) the subscribers "
                      "reconnect and drain everything; every message is checked "
                      "(no gap, no duplicate, order kept). " if args.drain_rounds else "")
                   + "`none` keeps nothing, so it has no row here.\n")
        metrics = [
            ("load_rate", "publish rate while loading (msg/s)", "rate", 1),
            ("stop_secs", "clean stop, SIGTERM to exit (s)", "secs", 1),
            ("disk_bytes", "data on disk after stop (MiB, allocated)", "mib", 1 / (1024 * 1024)),
            ("restart_secs", "restart: process start to first CONNACK (s)", "secs", 1),
            ("rss_restart_kib", "broker RSS after restart (MiB)", "mib", mib),
            ("rss_restart_file_kib", "of which file-backed (MiB)", "mib", mib),
        ]
        if args.drain_rounds:
            n = min(args.drain_rounds, args.rounds)
            metrics.append(("drain_rate", f"drain after restart (msg/s, all subscribers; "
                            f"{n} round{'s' if n > 1 else ''})", "rate", 1))
        out.append(table(results, "B", b_setups, metrics, b_pairs))
        out.append(f"\nPer round, restart (s): {samples(results, 'B', b_setups, 'restart_secs', 'secs')}.\n")
        if args.drain_rounds:
            checks = []
            for s in b_setups:
                ok = [r for r in results["B"][s] if "error" not in r and "drain_sessions" in r]
                if ok:
                    checks.append(f"`{s}` sessions present {min(int(r['drain_sessions']) for r in ok)}/"
                                  f"{args.subscribers}, duplicates {sum(int(r['drain_dups']) for r in ok)}, "
                                  f"out of order {sum(int(r['drain_out_of_order']) for r in ok)}")
            out.append("Drain checks over all rounds (a missing message fails the round): "
                       + "; ".join(checks) + ".\n")

    out.append("## Reading these numbers\n")
    out.append("- The setups promise different things. `none` and `snapshot` keep messages in memory only "
               "while running (`snapshot` writes them out at shutdown); `sqlite` acknowledges a message "
               "before it is committed (every 5 s, without fsync); `lmdb` (tick) commits and syncs "
               "once per broker loop iteration. Rates compare costs, not equal guarantees.")
    out.append("- The publish rate is wall-clock and moves with whatever else the machine runs (see the "
               "load average above); broker CPU time per message is less sensitive to that. The broker is "
               "single-threaded: CPU time below the wall time is time it waits (for the client, the disk or "
               "a CPU).")
    out.append("- The restart reads the data files from the page cache (they were just written)"
               + (", except where the page cache was dropped before the restart (`--drop-caches`)."
                  if args.drop_caches else "; `--drop-caches` measures a cold start."))
    out.append("- RSS includes file-backed pages (an LMDB map counts there once read); those are page "
               "cache the kernel can reclaim, the rest is the broker's own memory.\n")

    errors = [(sc, s, r["error"]) for sc in ("A", "B") for s, rs in results[sc].items()
              for r in rs if "error" in r]
    if errors:
        out.append("## Failures\n")
        for sc, s, e in errors:
            out.append(f"- {sc}/{s}: {e.splitlines()[0]}")
        out.append("")
    if info.get("skipped"):
        out.append("## Not measured\n")
        for s, why in info["skipped"]:
            out.append(f"- `{s}`: {why}")
        out.append("")

    out.append("## How it was measured\n")
    out.append("`scripts/bench` (= `scripts/root.sh bench/run.sh`) builds `bench/loadgen` (C, libmosquitto) "
               "and runs `bench/run.py`. Options: `--quick`, `--rounds R`, `--messages N` (scenario A), "
               "`--restart-messages M` (scenario B, per subscriber), `--setups none,snapshot,sqlite,lmdb`, "
               "`--scenarios A,B`, `--drain-rounds R` / `--no-drain`, `--drop-caches`, `--out FILE`, "
               "`--no-build` (use `build/mosquitto_persist_lmdb.so` as it is). Raw results: "
               f"`{os.path.relpath(args.json, SRC)}`. Per broker and round:\n")
    out.append("```sh")
    out.append("mosquitto -c DIR/mosquitto.conf &          # config below; T0 = start time")
    out.append("loadgen wait-connect -p PORT -S T0")
    out.append(f"loadgen subscribe-offline -p PORT -k {args.subscribers}")
    out.append(f"loadgen publish -p PORT -n {args.messages} -s {args.size} -q 1 -w {args.window}   # A")
    out.append(f"loadgen publish -p PORT -n {args.restart_messages} -s {args.size} -q 1 -w {args.window}   # B")
    out.append("kill -TERM $PID; wait                        # B: stop, measure DIR/data")
    out.append("mosquitto -c DIR/mosquitto.conf &; loadgen wait-connect -p PORT -S T0   # B: restart")
    if args.drain_rounds:
        out.append(f"loadgen drain -p PORT -k {args.subscribers} -n {args.restart_messages}   # B")
    out.append("```\n")
    out.append("Configs (all: `listener PORT 127.0.0.1`, `allow_anonymous true`, `user root`, "
               "`max_queued_messages 0`, `max_queued_bytes 0`, `log_dest file ...`"
               + "".join(f", `{c}`" for c in args.conf_extra) + "), plus:\n")
    out.append("```")
    out.append("# snapshot")
    out.append("persistence true")
    out.append("persistence_location DIR/data")
    out.append("# sqlite")
    out.append(f"global_plugin {args.sqlite_plugin}")
    out.append("persistence_location DIR/data")
    if "sqlite-flush0" in args.setups:
        out.append("# sqlite-flush0: as sqlite, plus")
        out.append("plugin_opt_flush_period 0")
    out.append("# lmdb")
    out.append(f"global_plugin {args.lmdb_plugin}")
    out.append("plugin_opt_key_file DIR/key                 # 32 random bytes, mode 600")
    out.append("plugin_opt_db_path DIR/data")
    out.append("```")
    return "\n".join(out) + "\n"


def main():
    global args
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small run (about 1 min): 20,000 messages in A, 20,000 per subscriber in B")
    ap.add_argument("--rounds", type=int, help="rounds (default 3)")
    ap.add_argument("--messages", type=int, help="scenario A messages (default 100,000)")
    ap.add_argument("--restart-messages", type=int,
                    help="scenario B messages per subscriber (default 200,000)")
    ap.add_argument("--subscribers", type=int, default=5)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--setups", default=",".join(DEFAULT_SETUPS),
                    help=f"comma-separated, from {','.join(ALL_SETUPS)} (default {','.join(DEFAULT_SETUPS)})")
    ap.add_argument("--scenarios", default="A,B")
    ap.add_argument("--drain-rounds", type=int, default=1,
                    help="scenario B: drain after the restart in the first R rounds (default 1)")
    ap.add_argument("--no-drain", dest="drain_rounds", action="store_const", const=0,
                    help="scenario B: never drain after the restart")
    ap.add_argument("--drop-caches", action="store_true",
                    help="scenario B: drop the page cache before the restart (needs a writable /proc/sys)")
    ap.add_argument("--conf", dest="conf_extra", action="append", default=[], metavar="LINE",
                    help="extra line for every broker config, e.g. 'set_tcp_nodelay true' (repeatable)")
    ap.add_argument("--out", help="markdown report (default docs/benchmarks.md for a full run, none for --quick)")
    ap.add_argument("--no-write", action="store_true", help="only print the report")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--sqlite-plugin", default=SQLITE_PLUGIN)
    ap.add_argument("--lmdb-plugin", default=os.environ.get("PERSIST_LMDB_BENCH_PLUGIN") or
                    os.path.join(SRC, "build", "mosquitto_persist_lmdb.so"))
    ap.add_argument("--loadgen", default=os.path.join(SRC, "build-bench", "tool", "loadgen"))
    ap.add_argument("--data-dir", default=os.path.join(SRC, "build-bench", "data"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    if args.rounds is None:
        args.rounds = 3
    if args.messages is None:
        args.messages = 20000 if args.quick else 100000
    if args.restart_messages is None:
        args.restart_messages = 20000 if args.quick else 200000
    if args.out is None and not args.quick:
        args.out = os.path.join(SRC, "docs", "benchmarks.md")
    args.data_dir = os.path.abspath(args.data_dir)
    args.json = os.path.join(args.data_dir, "results.json")
    args.setups = [s for s in args.setups.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.setups:
        if s not in ALL_SETUPS:
            ap.error(f"unknown setup {s}")
    for s in scenarios:
        if s not in ("A", "B"):
            ap.error(f"unknown scenario {s}")

    skipped = []
    for s, path in (("sqlite", args.sqlite_plugin), ("sqlite-flush0", args.sqlite_plugin),
                    ("lmdb", args.lmdb_plugin)):
        if s in args.setups and not os.path.exists(path):
            skipped.append((s, f"{path} does not exist"))
            args.setups.remove(s)
            log(f"bench: skipping {s}: {path} does not exist")
    if not os.access(args.loadgen, os.X_OK):
        ap.error(f"{args.loadgen} is not built (bench/run.sh builds it)")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(kill_brokers)
    os.makedirs(args.data_dir, exist_ok=True)

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": "%.2f" % os.getloadavg()[0],
            "command": "scripts/bench" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:])),
            "skipped": skipped}
    info.update(machine())
    if "lmdb" in args.setups:
        info["lmdb_plugin"] = os.path.relpath(args.lmdb_plugin, SRC)
        info["lmdb_plugin_mtime"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(args.lmdb_plugin), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = {"A": {}, "B": {}}
    t_start = time.monotonic()
    for rnd in range(args.rounds):
        order = args.setups[rnd % len(args.setups):] + args.setups[:rnd % len(args.setups)]
        for sc, fn, setups in (("A", run_a, order), ("B", run_b, [s for s in order if s in RESTART_SETUPS])):
            if sc not in scenarios:
                continue
            for s in setups:
                t = time.monotonic()
                try:
                    r = fn(s, rnd)
                except (BenchError, subprocess.TimeoutExpired, OSError, KeyError) as e:
                    r = {"error": str(e)}
                    log(f"bench: {sc}/{s} round {rnd + 1} FAILED: {e}")
                results[sc].setdefault(s, []).append(r)
                if "error" not in r:
                    brief = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in r.items())
                    log(f"bench: {sc}/{s} round {rnd + 1}/{args.rounds}: {brief} "
                        f"({time.monotonic() - t:.0f} s)")
    info["elapsed"] = time.monotonic() - t_start
    info["load_after"] = "%.2f" % os.getloadavg()[0]

    with open(args.json, "w") as f:
        json.dump({"info": info, "args": {k: v for k, v in vars(args).items()}, "results": results},
                  f, indent=1)
    text = report(results, info)
    print(text)
    if args.out and not args.no_write:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        log(f"bench: wrote {os.path.relpath(args.out, SRC)}")
    failed = any("error" in r for sc in results.values() for rs in sc.values() for r in rs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
