#!/usr/bin/env python3
"""persist-lmdb benchmarks. Benchmarks are not tests: they measure, they do not judge.

Runs the same Mosquitto binary with several persistence setups, interleaved
over several rounds (setup order rotated each round), and reports medians:

  none      no persistence
  snapshot  Mosquitto's own snapshot persistence (persistence true; saved on shutdown)
  sqlite    the stock persist-sqlite plugin, its defaults (flush_period 5 s, sync normal)
  lmdb      persist-lmdb, its defaults (sync tick, offline queues in the
            database only: queue_storage disk)
  lmdb-periodic  persist-lmdb, plugin_opt_sync periodic (synced every second)
  lmdb-publish   persist-lmdb, plugin_opt_sync publish (journal synced before each PUBACK)
  lmdb-memory    persist-lmdb, plugin_opt_queue_storage memory (the broker holds
                 every queue as well, the default before 2026-12-07)
  lmdb-ttl       lmdb with plugin_opt_offline_ttl 7d (queue limits and expiry
                 bookkeeping on)
  lmdb-commit0   persist-lmdb, plugin_opt_commit_interval_ms 0 (a commit every
                 broker loop iteration instead of every 100 ms)
  sqlite-flush0  persist-sqlite, plugin_opt_flush_period 0
  sync-floor     a plugin that only writes each QoS 1/2 PUBLISH with one O_DSYNC
                 pwrite before its PUBACK (bench/syncfloor.c): what syncing once
                 per message costs this broker, with nothing else stored

Scenario A (offline fan-out): K offline persistent subscribers, one windowed
QoS 1 publisher, N messages -> acknowledged publish rate.
Scenario B (restart): K offline subscribers x M queued messages -> broker CPU
per message while loading, anonymous memory growth 0.5 s and 3 s after the last
PUBACK; SIGTERM, start again -> time from process start to first CONNACK, RSS
after restart, data on disk; then the subscribers drain everything (rate, and
every message checked). With K = 3,000 and M = 100: issue 21's group fan-out
backlog.
Scenario C (durable publish): one QoS 1 publisher with a window of 1 (each
message waits for its PUBACK) and of 100, one offline subscriber, for a fixed
time -> acknowledged publish rate, against the disk's synced-write rate
(bench/syncprobe: pwrite+fdatasync, mmap+msync) measured in the same data
directory, in slices alternating with lmdb-publish's window-1 publishing.

Scenario D (fan-in): 4 publishers (a connection and thread each, window 100),
one offline subscriber -> publish rate of all; then the drain checks every
message and each publisher's order.
Scenario E (online pass-through): 5 connected subscribers with persistent
sessions, one publisher at full speed -> acknowledged publish rate, delivered
rate; then the publisher at a fixed rate (1000 msg/s) -> latency p50/p99/max
and histogram (receive time - publish time in the payload).
Scenario F (64 KiB payloads): as A with 64 KiB messages -> msg/s, MB/s, data
on disk after a clean stop.
Scenario G (many sessions): 10,000 offline sessions, each on its own topic
with one queued message, restart -> time to first CONNACK, RSS, data on disk.
Scenario H (reconnect storm): 5,000 offline sessions, each subscribed to its
own topic and to one group topic; 19 messages to each own topic and 1 to the
group (20 queued per session); SIGTERM, start again -> time to first CONNACK,
RSS; then all sessions reconnect at once and drain -> drain time, rate, broker
CPU per delivered message, peak and anonymous memory, every message checked.
B, G, H: only the setups that keep data (not `none`); C has its own --c-setups.

The report (--out; docs/benchmarks.md for a full default run) starts with the
issue's targets for `lmdb` (ratios of this run's medians, met / NOT met) and a
chart (gnuplot, a PNG next to the report; without gnuplot the report says so).
Raw results in DATA_DIR/results.json. Started by bench/run.sh (which builds
bench/loadgen and bench/syncprobe); see docs/benchmarks.md.
"""
import argparse
import atexit
import contextlib
import datetime
import json
import os
import select
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
LMDB_SETUPS = {"lmdb": None, "lmdb-periodic": "periodic", "lmdb-publish": "publish",
               "lmdb-memory": None, "lmdb-ttl": None, "lmdb-commit0": None}  # -> plugin_opt_sync
LMDB_EXTRA = {"lmdb-memory": ["plugin_opt_queue_storage memory"],
              "lmdb-ttl": ["plugin_opt_offline_ttl 7d"],
              "lmdb-commit0": ["plugin_opt_commit_interval_ms 0"]}
DEFAULT_SETUPS = ["none", "snapshot", "sqlite", "lmdb", "lmdb-periodic"]
ALL_SETUPS = DEFAULT_SETUPS + ["sqlite-flush0", "lmdb-publish", "sync-floor", "lmdb-memory", "lmdb-ttl",
                               "lmdb-commit0"]
RESTART_SETUPS = ["snapshot", "sqlite", "sqlite-flush0", "lmdb", "lmdb-memory", "lmdb-ttl", "lmdb-commit0"]  # `none` has nothing to restore
# Scenario C. The disk probe (bench/syncprobe) runs in slices next to C_JUDGED,
# or, without it, takes its own turn in the rotation as `probe`.
C_SETUPS = ["none", "sqlite", "sqlite-flush0", "lmdb", "lmdb-periodic", "lmdb-publish", "sync-floor"]
C_MESSAGES_CAP = 100000000  # scenario C publishes for a time; -n only bounds it
C_JUDGED = "lmdb-publish"  # scenario C: the setup judged against the probe, interleaved with it
SCENARIOS = ["A", "B", "C", "D", "E", "F", "G", "H"]
E_SUBSCRIBERS = 5
F_SIZE = 64 * 1024
G_TOPIC = "bench/g"
H_TOPIC = "bench/h"  # scenario H: session I's own topic is bench/h/I
H_GROUP = "bench/h-all"  # scenario H: every session's group topic
H_GROUP_MSGS = 1  # scenario H: messages to the group topic, after the own ones

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


def shown(path):
    """A path for the report: relative when it is in the source tree."""
    rel = os.path.relpath(path, SRC)
    return path if rel.startswith("..") else rel


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
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile (+RssShmem) of a process, KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(line.split()[1])
    return out


def cpu_secs(pid):
    """utime + stime of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listen_overflows():
    """The system's count of connections a full listen queue dropped (TcpExt
    ListenOverflows in /proc/net/netstat; all processes), or None."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:]))
            return int(row["ListenOverflows"]) if "ListenOverflows" in row else None
    return None


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
        elif setup in LMDB_SETUPS:
            key = os.path.join(workdir, "key")
            with open(key, "wb") as f:
                f.write(os.urandom(32))
            os.chmod(key, 0o600)
            lines += [f"global_plugin {args.lmdb_plugin}", f"plugin_opt_key_file {key}",
                      f"plugin_opt_db_path {self.data}"]
            if LMDB_SETUPS[setup]:
                lines += [f"plugin_opt_sync {LMDB_SETUPS[setup]}"]
            lines += LMDB_EXTRA.get(setup, [])
        elif setup == "sync-floor":
            lines += [f"global_plugin {args.syncfloor}", f"plugin_opt_dir {self.data}"]
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

    def spawn(self, cmd, *opts):
        argv = [args.loadgen, cmd, "-p", str(self.port), "-T", str(args.timeout), *map(str, opts)]
        if args.verbose:
            log("  $ " + shlex.join(argv))
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, p, cmd):
        """Waits for a loadgen process and parses its last line; stops it early
        if the broker dies meanwhile."""
        deadline = time.monotonic() + args.timeout + 30
        try:
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
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        line = out.strip().splitlines()[-1] if out.strip() else ""
        if args.verbose and line:
            log("    " + line)
        if p.returncode != 0:
            alive = self.proc is not None and self.proc.poll() is None
            raise BenchError(f"{self.setup}: loadgen {cmd} failed (rc {p.returncode}): {line}\n"
                             f"{err.strip()}\nbroker {'running' if alive else 'exited'}; "
                             f"log tail:\n{self.log_tail()}")
        return parse_kv(line)

    def loadgen(self, cmd, *opts):
        """Runs one loadgen command to its end."""
        return self.finish(self.spawn(cmd, *opts), cmd)

    def loadgen_ready(self, cmd, *opts):
        """Starts a loadgen command that keeps running (subscribe-online) and
        returns its process once it has printed its ready=1 line."""
        p = self.spawn(cmd, *opts)
        deadline = time.monotonic() + min(args.timeout, 120)
        while time.monotonic() < deadline and p.poll() is None and self.proc and self.proc.poll() is None:
            if select.select([p.stdout], [], [], 0.2)[0]:
                line = p.stdout.readline()
                if "ready=1" in line:
                    return p
                if not line:
                    break
        p.kill()
        _out, err = p.communicate()
        raise BenchError(f"{self.setup}: loadgen {cmd}: not ready (rc {p.returncode}): {err.strip()}\n"
                         f"log tail:\n{self.log_tail()}")

    def wait_ready(self, since):
        return self.loadgen("wait-connect", "-S", f"{since:.6f}")["secs"]

    def cleanup(self):
        self.kill()
        if not args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def fresh_broker(setup, name):
    """A broker of setup with its own data directory under name, started on
    a synced disk and ready; removed afterwards."""
    b = Broker(setup, os.path.join(args.data_dir, name))
    try:
        os.sync()
        b.wait_ready(b.start())
        yield b
    finally:
        b.cleanup()


def run_a(setup, rnd):
    with fresh_broker(setup, f"A-{setup}-r{rnd}") as b:
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


def run_b(setup, rnd):
    res = {}
    with fresh_broker(setup, f"B-{setup}-r{rnd}") as b:
        b.loadgen("subscribe-offline", "-k", args.subscribers)
        anon0 = mem_kib(b.proc.pid).get("RssAnon", 0)
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", args.restart_messages, "-s", args.size, "-q", 1,
                      "-w", args.window)
        res["load_cpu_us_per_msg"] = (cpu_secs(b.proc.pid) - cpu0) * 1e6 / args.restart_messages
        res["load_rate"] = r["rate"]
        # At rest: the anonymous memory the queued backlog holds (lmdb
        # releases offline queues at its tick, trims the heap once a second).
        time.sleep(0.5)
        res["rest_anon_kib"] = mem_kib(b.proc.pid).get("RssAnon", 0) - anon0
        time.sleep(2.5)
        res["rest3_anon_kib"] = mem_kib(b.proc.pid).get("RssAnon", 0) - anon0
        res["rss_loaded_kib"] = mem_kib(b.proc.pid).get("VmRSS")
        res["stop_secs"] = b.stop()
        alloc, apparent = disk_usage(b.data)
        res["disk_bytes"] = alloc
        res["disk_apparent_bytes"] = apparent
        res["disk_bytes_per_msg"] = alloc / (args.subscribers * args.restart_messages)
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
            res["drain_first_ms"] = d["first_ms"]
            res["drain_sessions"] = d["sessions"]
            res["drain_dups"] = d["dups"]
            res["drain_out_of_order"] = d["out_of_order"]
        b.stop()
        return res


def run_d(setup, rnd):
    with fresh_broker(setup, f"D-{setup}-r{rnd}") as b:
        b.loadgen("subscribe-offline", "-k", 1)
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", args.messages, "-P", args.publishers, "-s", args.size, "-q", 1,
                      "-w", args.window)
        cpu = cpu_secs(b.proc.pid) - cpu0
        d = b.loadgen("drain", "-k", 1, "-n", args.messages, "-P", args.publishers)
        b.stop()
        return {"publish_rate": r["rate"], "broker_cpu_us_per_msg": cpu * 1e6 / args.messages,
                "drain_rate": d["rate"], "drain_dups": d["dups"], "drain_out_of_order": d["out_of_order"]}


def online_pass(b, n, *pub_opts):
    """subscribe-online (E_SUBSCRIBERS sessions) while one publisher sends n
    messages: (publish result, subscribers' result, broker CPU seconds)."""
    sub = b.loadgen_ready("subscribe-online", "-k", E_SUBSCRIBERS, "-n", n, "-q", 1, "-i", "online-")
    try:
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", n, "-s", args.size, "-q", 1, "-w", args.window, *pub_opts)
        d = b.finish(sub, "subscribe-online")
        return r, d, cpu_secs(b.proc.pid) - cpu0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()


def run_e(setup, rnd):
    with fresh_broker(setup, f"E-{setup}-r{rnd}") as b:
        r, d, cpu = online_pass(b, args.e_messages)
        res = {"publish_rate": r["rate"], "deliver_rate": d["rate"],
               "broker_cpu_us_per_msg": cpu * 1e6 / args.e_messages,
               "sat_p50_us": d["lat_p50_us"], "sat_p99_us": d["lat_p99_us"]}
        n = max(1, int(args.e_rate * args.e_secs))
        r, d, _cpu = online_pass(b, n, "-R", args.e_rate)
        res.update({"paced_rate": r["rate"], "lat_p50_us": d["lat_p50_us"], "lat_p99_us": d["lat_p99_us"],
                    "lat_max_us": d["lat_max_us"], "lat_hist": d["hist_us"],
                    "dups": d["dups"], "out_of_order": d["out_of_order"]})
        b.stop()
        return res


def run_f(setup, rnd):
    with fresh_broker(setup, f"F-{setup}-r{rnd}") as b:
        b.loadgen("subscribe-offline", "-k", args.subscribers)
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", args.f_messages, "-s", F_SIZE, "-q", 1, "-w", args.window)
        cpu = cpu_secs(b.proc.pid) - cpu0
        rss = mem_kib(b.proc.pid).get("VmRSS")
        res = {"publish_rate": r["rate"], "publish_mbps": r["rate"] * F_SIZE / 1e6,
               "broker_cpu_us_per_msg": cpu * 1e6 / args.f_messages, "rss_kib": rss,
               "stop_secs": b.stop()}
        res["disk_bytes"] = disk_usage(b.data)[0]
        return res


def restart_measured(b, res):
    """The stopped broker's data on disk, then its restart to first CONNACK
    and RSS after it, into res; -> the broker's memory after the restart."""
    res["disk_bytes"] = disk_usage(b.data)[0]
    os.sync()
    res["restart_secs"] = b.wait_ready(b.start())
    mem = mem_kib(b.proc.pid)
    res["rss_restart_kib"] = mem.get("VmRSS")
    return mem


def run_g(setup, rnd):
    with fresh_broker(setup, f"G-{setup}-r{rnd}") as b:
        s = b.loadgen("subscribe-offline", "-k", args.sessions, "-e", "-t", G_TOPIC, "-i", "g-")
        mem_sessions = mem_kib(b.proc.pid)
        rss_sessions = mem_sessions.get("VmRSS")
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", args.sessions * args.per_session, "-e", "-k", args.sessions,
                      "-t", G_TOPIC, "-s", args.size, "-q", 1, "-w", args.window)
        cpu = cpu_secs(b.proc.pid) - cpu0
        time.sleep(1.5)  # at rest: lmdb releases offline queues and unmaps the file each second
        mem_loaded = mem_kib(b.proc.pid)
        rss_loaded = mem_loaded.get("VmRSS")
        res = {"session_rate": args.sessions / s["secs"] if s["secs"] > 0 else None,
               "publish_rate": r["rate"],
               "broker_cpu_us_per_msg": cpu * 1e6 / (args.sessions * args.per_session),
               "rss_loaded_kib": rss_loaded,
               "backlog_rss_kib": rss_loaded - rss_sessions if rss_loaded and rss_sessions else None,
               "backlog_anon_kib": mem_loaded.get("RssAnon", 0) - mem_sessions.get("RssAnon", 0),
               "stop_secs": b.stop()}
        mem = restart_measured(b, res)
        res["rss_restart_file_kib"] = mem.get("RssFile")
        b.stop()
        return res


def run_h(setup, rnd):
    k, n = args.storm_sessions, args.storm_sessions * args.storm_own
    with fresh_broker(setup, f"H-{setup}-r{rnd}") as b:
        s = b.loadgen("subscribe-offline", "-k", k, "-e", "-t", H_TOPIC, "-g", H_GROUP, "-i", "h-")
        cpu0 = cpu_secs(b.proc.pid)
        r = b.loadgen("publish", "-n", n, "-e", "-k", k, "-t", H_TOPIC, "-g", H_GROUP, "-G", H_GROUP_MSGS,
                      "-s", args.size, "-q", 1, "-w", args.window)
        cpu = cpu_secs(b.proc.pid) - cpu0
        res = {"session_rate": k / s["secs"] if s["secs"] > 0 else None,
               "publish_rate": r["rate"],
               "broker_cpu_us_per_msg": cpu * 1e6 / r["msgs"] if r["msgs"] else None,
               "stop_secs": b.stop()}
        res["rss_restart_anon_kib"] = restart_measured(b, res).get("RssAnon")
        # The storm: every session reconnects at once and takes its 20 messages.
        drops0 = listen_overflows()
        cpu0 = cpu_secs(b.proc.pid)
        d = b.loadgen("drain", "-e", "-k", k, "-n", n, "-G", H_GROUP_MSGS, "-i", "h-")
        cpu = cpu_secs(b.proc.pid) - cpu0
        mem = mem_kib(b.proc.pid)
        drops1 = listen_overflows()
        res.update({"storm_secs": d["secs"], "storm_first_ms": d["first_ms"], "storm_rate": d["rate"],
                    "storm_cpu_secs": cpu,
                    "storm_cpu_us_per_msg": cpu * 1e6 / d["received"] if d["received"] else None,
                    "storm_hwm_kib": mem.get("VmHWM"), "storm_rss_kib": mem.get("VmRSS"),
                    "storm_anon_kib": mem.get("RssAnon"),
                    "storm_listen_drops": drops1 - drops0 if drops0 is not None and drops1 is not None else None,
                    "storm_reconnects": d.get("reconnects"),
                    "storm_lat_p99_us": d["lat_p99_us"],
                    "storm_sessions": d["sessions"], "storm_received": d["received"],
                    "storm_dups": d["dups"], "storm_out_of_order": d["out_of_order"], "storm_bogus": d["bogus"]})
        # A missing message already failed loadgen; a duplicate, a message out of
        # order or one for another session fails the round too.
        bad = [f"{key} {int(d[key])}" for key in ("dups", "out_of_order", "bogus") if d.get(key)]
        if bad:
            raise BenchError(f"{setup}: storm drain: {', '.join(bad)} (received {int(d['received'])}, "
                             f"sessions present {int(d['sessions'])}/{k})")
        b.stop()
        return res


def run_probe(rnd, secs, tag=""):
    """The disk's synced-write rate in the data directory (bench/syncprobe)."""
    d = os.path.join(args.data_dir, f"C-probe-r{rnd}{tag}")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    argv = [args.syncprobe, "-d", d, "-t", f"{secs:g}", "-s", str(args.probe_size)]
    if args.verbose:
        log("  $ " + shlex.join(argv))
    try:
        os.sync()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=4 * secs + 120)
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if args.verbose and line:
        log("    " + line)
    if p.returncode != 0:
        raise BenchError(f"syncprobe failed (rc {p.returncode}): {p.stderr.strip()}")
    r = parse_kv(line)
    return {k: r[k] for k in ("pwrite_rate", "pwrite_p50_us", "pwrite_p99_us",
                              "mmap_rate", "mmap_p50_us", "mmap_p99_us")}


def c_publish(b, w, secs):
    """One timed publish on a running broker: (loadgen result, broker CPU seconds)."""
    cpu0 = cpu_secs(b.proc.pid)
    r = b.loadgen("publish", "-n", C_MESSAGES_CAP, "-s", args.size, "-q", 1, "-w", w, "-D", f"{secs:g}")
    return r, cpu_secs(b.proc.pid) - cpu0


def run_c(setup, rnd):
    if setup == "probe":
        return {"slices": [run_probe(rnd, args.c_secs)]}
    res = {}
    for w in args.c_windows:
        with fresh_broker(setup, f"C-{setup}-w{w}-r{rnd}") as b:
            b.loadgen("subscribe-offline", "-k", 1)
            if setup == C_JUDGED and w == args.c_windows[0] and args.c_slices:
                # The judged figure: slices of publishing alternate with slices
                # of probing (probe first in even slices, publish first in odd
                # ones), so that each ratio compares measurements seconds apart.
                secs = args.c_secs / args.c_slices
                msgs = wall = cpu = 0
                res["slices"] = []
                for k in range(args.c_slices):
                    if k % 2 == 0:
                        pr = run_probe(rnd, secs, f"-s{k}")
                        r, c = c_publish(b, w, secs)
                    else:
                        r, c = c_publish(b, w, secs)
                        pr = run_probe(rnd, secs, f"-s{k}")
                    res["slices"].append(dict(pr, rate=r["rate"]))
                    msgs += r["msgs"]
                    wall += r["secs"]
                    cpu += c
                r = {"msgs": msgs, "secs": wall, "rate": msgs / wall if wall > 0 else 0}
            else:
                r, cpu = c_publish(b, w, args.c_secs)
            b.stop()
            res[f"w{w}_rate"] = r["rate"]
            res[f"w{w}_msgs"] = r["msgs"]
            res[f"w{w}_cpu_us"] = cpu * 1e6 / r["msgs"] if r["msgs"] else None
            res[f"w{w}_cpu_share"] = 100 * cpu / r["secs"] if r["secs"] > 0 else None
    return res


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind in ("secs", "ratio"):
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


def probe_rounds(results):
    """Per round, the probe measurements of scenario C (slices next to the judged
    setup, or the probe's own turn), or None for a failed round."""
    src = "probe" if results["C"].get("probe") else C_JUDGED
    return [r.get("slices") if "error" not in r else None for r in results["C"].get(src, [])]


def report_c(results, c_setups):
    """Scenario C: durable publish against the disk's synced-write rate."""
    ws = args.c_windows
    rounds = probe_rounds(results)
    sliced = not results["C"].get("probe")
    out = ["## C. Durable publish: one publisher against the disk's sync rate\n"]
    out.append(f"One publisher sends QoS 1 messages of {args.size} bytes for {args.c_secs:g} s, "
               + " and, on a fresh broker, ".join(
                   f"with at most {w} unacknowledged" + (" (each message waits for its PUBACK: what a "
                                                         "broker that makes every message durable before "
                                                         "acknowledging it serves to one synchronous "
                                                         "publisher)" if w == 1 else "")
                   for w in ws)
               + "; one offline persistent subscriber, so every message is queued. "
               "Rate = messages / time until the last PUBACK; at window 1 the publisher runs its network loop "
               "in its own thread (no hand-over to a loop thread). In the same data directory, `syncprobe` "
               "measures the disk: a zero-filled 4 MiB file, "
               f"{args.probe_size}-byte writes at successive offsets, each followed by `fdatasync` (pwrite) or "
               "by `msync(MS_SYNC)` of the page it touched (mmap; the journal writes with pwrite on an O_DSYNC "
               "descriptor, a variant of the first). One synced write per "
               "message is the most any broker that syncs each message before its PUBACK can serve one "
               "synchronous publisher: the physical limit. "
               + (f"The disk's load from elsewhere changes from second to second, so `{C_JUDGED}` at window "
                  f"{ws[0]} publishes in {args.c_slices} slices of {args.c_secs / args.c_slices:g} s, each "
                  f"next to a probe of {args.c_secs / args.c_slices:g} s per variant on the same broker "
                  "run (probe first, then publish first, alternately), and each slice gives a ratio."
                  if sliced else f"The probe takes its own turn in every round, {args.c_secs:g} s per variant.")
               + "\n")
    all_slices = [sl for rs in rounds if rs for sl in rs]
    pw = median([sl["pwrite_rate"] for sl in all_slices])
    md = median([sl["mmap_rate"] for sl in all_slices])
    if all_slices:
        lines = [f"| disk probe | median{' of all slices' if sliced else ''} | per round"
                 f"{' (median of its slices)' if sliced else ''} |", "|---|---|---|"]
        for key, label in (("pwrite_rate", "pwrite + fdatasync (writes/s)"),
                           ("mmap_rate", "mmap + msync MS_SYNC (writes/s)"),
                           ("pwrite_p50_us", "pwrite + fdatasync, latency p50 (µs)"),
                           ("pwrite_p99_us", "pwrite + fdatasync, latency p99 (µs)"),
                           ("mmap_p50_us", "mmap + msync, latency p50 (µs)"),
                           ("mmap_p99_us", "mmap + msync, latency p99 (µs)")):
            per = [fmt(median([sl[key] for sl in rs]), "rate") if rs else "failed" for rs in rounds]
            lines.append(f"| {label} | {fmt(median([sl[key] for sl in all_slices]), 'rate')} | "
                         f"{', '.join(per)} |")
        out.append("\n".join(lines) + "\n")
    if c_setups:
        metrics = []
        for w in ws:
            metrics.append((f"w{w}_rate", f"publish rate, window {w} (msg/s, acked)", "rate", 1))
        for w in ws:
            metrics.append((f"w{w}_cpu_us", f"broker CPU time per message, window {w} (µs)", "us", 1))
        for w in ws:
            metrics.append((f"w{w}_cpu_share", f"broker CPU time / wall time, window {w} (%)", "pct", 1))
        pairs = [p for p in [(C_JUDGED, "lmdb"), (C_JUDGED, "none"), (C_JUDGED, "sync-floor")]
                 if p[0] in c_setups and p[1] in c_setups]
        out.append(table(results, "C", c_setups, metrics, pairs))
        for w in ws:
            out.append(f"\nPer round, window {w} (msg/s): "
                       f"{samples(results, 'C', c_setups, f'w{w}_rate', 'rate')}.")
        out.append("")
    if C_JUDGED in c_setups and all_slices:
        w = ws[0]
        # (to fdatasync, to msync, to the higher of the two), per slice, by round
        if sliced:
            pairs = [[(sl["rate"], sl) for sl in rs] if rs else [] for rs in rounds]
        else:
            pub = [r.get(f"w{w}_rate") if "error" not in r else None for r in results["C"][C_JUDGED]]
            pairs = [[(x, rs[0])] if x is not None and rs else [] for x, rs in zip(pub, rounds)]
        ratios = [[(x / sl["pwrite_rate"], x / sl["mmap_rate"], x / max(sl["pwrite_rate"], sl["mmap_rate"]))
                   for x, sl in rp if min(sl["pwrite_rate"], sl["mmap_rate"]) > 0] for rp in pairs]
        flat = [t for rr in ratios for t in rr]
        if flat:
            to_pw = median([t[0] for t in flat])
            to_mm = median([t[1] for t in flat])
            to_max = median([t[2] for t in flat])
            verdict = "meets" if to_max >= 0.8 else "does NOT meet"
            per_round = "; ".join(
                f"{median([t[0] for t in rr]):.2f} / {median([t[1] for t in rr]):.2f}" if rr else "n/a"
                for rr in ratios)
            out.append(f"Target (`publish` mode, one publisher, at least 0.8 of the disk's sync rate measured "
                       f"in the same run): `{C_JUDGED}` at window {w} reaches {to_pw:.2f} of pwrite + "
                       f"fdatasync and {to_mm:.2f} of mmap + msync (medians over {len(flat)} "
                       f"{'slices' if sliced else 'rounds'}); against the higher of the two probe rates "
                       f"{to_max:.2f}: it {verdict} the target in this run. "
                       + (f"Per round (median of its slices, to fdatasync / to msync): {per_round}."
                          if sliced else f"Per round (to fdatasync / to msync): {per_round}.")
                       + (" A ratio above 1 means the disk was slower while the probe ran than while the broker "
                          "did (other load on the disk; see the probe's latencies): such a measurement says "
                          "little about the broker." if any(t[2] > 1 for t in flat) else "") + "\n")
        nw = median([r.get(f"w{w}_rate") for r in results["C"].get("none", []) if "error" not in r])
        limit = max(pw, md)
        if nw and limit:
            ideal = 1 / (1 / nw + 1 / limit)
            out.append(f"At window {w} a message costs a full round trip plus its sync, one after the other: "
                       f"with `none`'s round trip ({nw:,.0f} msg/s at window {w}) and the higher median probe "
                       f"rate ({limit:,.0f}/s), a broker whose only extra cost is one sync per message would "
                       f"reach about {ideal:,.0f} msg/s ({ideal / limit:.2f} of the probe).\n")
    floor = {w: median([r.get(f"w{w}_rate") for r in results["C"].get("sync-floor", []) if "error" not in r])
             for w in ws}
    if pw and all(floor.values()):
        below = max(floor[w] for w in ws) / pw < 0.8
        out.append("`sync-floor` measures what syncing once per message costs on this broker: a plugin whose "
                   "only work is one synced write per message (bench/syncfloor.c) reaches "
                   + ", ".join(f"{floor[w] / pw:.2f} of pwrite + fdatasync at window {w}" for w in ws)
                   + f" (median probe rate {pw:,.0f}/s). "
                   + ("A plugin that syncs each message before its PUBACK cannot do better on this broker "
                      "and disk, so the target is out of reach here: the PUBACK leaves during the handling of "
                      "its PUBLISH, "
                      "so the syncs of one publisher's messages cannot be combined, and the broker's own work "
                      "per message adds to each. " if below else "")
                   + (f"`{C_JUDGED}` reaches " + ", ".join(
                       f"{fmt(med_ratio(results, 'C', C_JUDGED, 'sync-floor', f'w{w}_rate'), 'ratio')} of "
                       f"`sync-floor` at window {w}" for w in ws) + "." if C_JUDGED in c_setups else "") + "\n")
    return out


def med(results, scenario, setup, key):
    """The median of one metric of one setup over its successful rounds."""
    return median([r.get(key) for r in results[scenario].get(setup, []) if "error" not in r])


def med_ratio(results, scenario, a, b, key):
    x, y = med(results, scenario, a, key), med(results, scenario, b, key)
    return x / y if x is not None and y else None


def targets(results):
    """The issue's targets for persist-lmdb's default mode (`lmdb`), from this run's medians."""
    queued = args.subscribers * args.restart_messages
    size = ("queued messages" if not results["B"] else
            f"{queued:,} queued" + ("" if queued == 1000000 else " (the target: 1,000,000)"))
    spec = [
        ("A", "offline fan-out: publish rate, lmdb / sqlite", "sqlite", "publish_rate", ">=", 2),
        ("A", "offline fan-out: publish rate, lmdb / none", "none", "publish_rate", ">=", 0.8),
        ("E", "online pass-through, persistent sessions: delivered rate, lmdb / none", "none",
         "deliver_rate", ">=", 0.8),
        ("B", f"restart with {size}: time to first CONNACK, lmdb / sqlite", "sqlite", "restart_secs",
         "<=", 0.5),
        ("B", f"bytes on disk per queued {args.size}-byte message, lmdb / sqlite", "sqlite",
         "disk_bytes_per_msg", "<=", 1),
        ("E", "online subscribers: p99 publish-to-deliver latency, lmdb / none", "none", "lat_p99_us",
         "<=", 2),
    ]
    lines = ["| scenario | target | measured | this run |", "|---|---|---|---|"]
    for sc, label, base, key, op, limit in spec:
        x = med_ratio(results, sc, "lmdb", base, key)
        if x is None:
            verdict, shown_x = "not measured", "n/a"
        else:
            met = x >= limit if op == ">=" else x <= limit
            verdict, shown_x = ("met" if met else "NOT met"), f"{x:.2f}"
        lines.append(f"| {sc} | {label} {op} {limit:g} | {shown_x} | {verdict} |")
    return lines


# (scenario, metric, label) of the chart: each setup's rate relative to `none`.
CHART_ROWS = [("A", "publish_rate", "A fan-out"), ("C", None, "C durable"), ("D", "publish_rate", "D fan-in"),
              ("E", "deliver_rate", "E online"), ("F", "publish_rate", "F 64 KiB")]


def chart(results):
    """Writes the chart's data and gnuplot script to the data directory and runs
    gnuplot: (PNG path or None, a sentence for the report)."""
    rows = []
    for sc, key, label in CHART_ROWS:
        key = key or f"w{args.c_windows[-1]}_rate"
        if sc == "C":
            label += f" (window {args.c_windows[-1]})"
        base = med(results, sc, "none", key)
        if base:
            rows.append((label, {s: med(results, sc, s, key) / base for s in ALL_SETUPS
                                 if s != "none" and med(results, sc, s, key) is not None}))
    setups = [s for s in ALL_SETUPS if any(s in r for _l, r in rows)]
    if not rows or not setups:
        return None, "No chart: no scenario with `none` and another setup in this run."
    png = (os.path.splitext(os.path.abspath(args.out))[0] + ".png" if args.out and not args.no_write
           else os.path.join(args.data_dir, "benchmarks.png"))
    dat = os.path.join(args.data_dir, "chart.dat")
    gp = os.path.join(args.data_dir, "chart.gp")
    with open(dat, "w") as f:
        f.write("scenario " + " ".join(setups) + "\n")
        for label, r in rows:
            f.write(f'"{label}" ' + " ".join(f"{r[s]:.3f}" if s in r else "NaN" for s in setups) + "\n")
    top = 1.15 * max([1.0] + [v for _l, r in rows for v in r.values()])
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo size 960,420 font ",10"
set output "{shown(png)}"
set title "Rate relative to no persistence (none = 1), medians of {args.rounds} round(s)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set datafile missing "NaN"
set yrange [0:{top:.2f}]
set ylabel "rate / rate of none"
set grid ytics
set key outside right top
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dashtype 2
plot for [i=2:{len(setups) + 1}] "{shown(dat)}" using i:xtic(1) title columnheader(i)
""")
    if not args.gnuplot:
        return None, (f"No chart: gnuplot was not found; its script and data are in `{shown(gp)}` and "
                      f"`{shown(dat)}` (`gnuplot {shown(gp)}` in the source tree draws it).")
    # Paths in the script are relative to the source tree, as in the report's hint.
    p = subprocess.run([args.gnuplot, gp], capture_output=True, text=True, cwd=SRC)
    if p.returncode != 0 or not os.path.exists(png):
        log(f"bench: gnuplot failed: {p.stderr.strip()}")
        return None, f"No chart: gnuplot failed ({p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode})."
    return png, ""


def report_more(results, setups, restart_setups):
    """Scenarios D to G."""
    out = []
    pairs_for = lambda sc, cands, pool: [p for p in cands if p[0] in pool and p[1] in pool]
    d_setups = [s for s in setups if results["D"].get(s)]
    if d_setups:
        out.append("## D. Fan-in\n")
        out.append(f"{args.publishers} publishers (one connection and thread each) send {args.messages:,} QoS 1 "
                   f"messages of {args.size} bytes between them, each publisher at most {args.window} "
                   "unacknowledged; one offline persistent subscriber (QoS 1) gets every message. Rate = "
                   "messages / time until the last PUBACK of all publishers. Then the subscriber reconnects "
                   "and drains everything; every message is checked (no gap, no duplicate, each publisher's "
                   "messages in its order).\n")
        out.append(table(results, "D", d_setups, [
            ("publish_rate", "publish rate (msg/s, acked, all publishers)", "rate", 1),
            ("broker_cpu_us_per_msg", "broker CPU time per published message (µs)", "us", 1),
            ("drain_rate", "drain (msg/s)", "rate", 1),
        ], pairs_for("D", [("lmdb", "sqlite"), ("lmdb", "none"), ("lmdb-periodic", "lmdb")], d_setups)))
        out.append(f"\nPer round (msg/s): {samples(results, 'D', d_setups, 'publish_rate', 'rate')}.\n")
        out.append("Drain checks over all rounds (a missing message fails the round): "
                   + "; ".join(f"`{s}` duplicates {sum(int(r['drain_dups']) for r in ok)}, out of order "
                               f"{sum(int(r['drain_out_of_order']) for r in ok)}"
                               for s in d_setups
                               for ok in [[r for r in results["D"][s] if "error" not in r]] if ok) + ".\n")
    e_setups = [s for s in setups if results["E"].get(s)]
    if e_setups:
        out.append("## E. Online pass-through with persistent sessions\n")
        out.append(f"{E_SUBSCRIBERS} subscribers with persistent sessions (clean session off, QoS 1) stay "
                   f"connected; one publisher sends {args.e_messages:,} QoS 1 messages of {args.size} bytes, "
                   f"at most {args.window} unacknowledged, as fast as it can. Every message is delivered to "
                   f"every subscriber ({E_SUBSCRIBERS * args.e_messages:,} deliveries), and a persistent "
                   "session's message is stored until its PUBACK: where persistence costs most. Publish "
                   "rate = messages / time until the last PUBACK; delivered rate = deliveries / time from "
                   "the first delivery to the last. At full speed the latency mostly measures the backlog, "
                   f"so then, on the same broker, the publisher sends at a fixed {args.e_rate:,.0f} msg/s for "
                   f"{args.e_secs:g} s (below every setup's capacity) and each delivery's latency is "
                   "measured: receive time - the publish time in the payload (same machine, same clock).\n")
        out.append(table(results, "E", e_setups, [
            ("publish_rate", "publish rate (msg/s, acked)", "rate", 1),
            ("deliver_rate", "delivered rate (msg/s, all subscribers)", "rate", 1),
            ("broker_cpu_us_per_msg", "broker CPU time per published message (µs)", "us", 1),
            ("sat_p50_us", "latency at full speed, p50 (µs)", "rate", 1),
            ("sat_p99_us", "latency at full speed, p99 (µs)", "rate", 1),
            ("lat_p50_us", f"latency at {args.e_rate:,.0f} msg/s, p50 (µs)", "rate", 1),
            ("lat_p99_us", f"latency at {args.e_rate:,.0f} msg/s, p99 (µs)", "rate", 1),
            ("lat_max_us", f"latency at {args.e_rate:,.0f} msg/s, max (µs)", "rate", 1),
        ], pairs_for("E", [("lmdb", "sqlite"), ("lmdb", "none"), ("lmdb-periodic", "lmdb")], e_setups)))
        out.append(f"\nPer round, delivered (msg/s): "
                   f"{samples(results, 'E', e_setups, 'deliver_rate', 'rate')}.\n")
        out.append(f"Per round, p99 latency at {args.e_rate:,.0f} msg/s (µs): "
                   f"{samples(results, 'E', e_setups, 'lat_p99_us', 'rate')}.\n")
        out.append(f"Latency histograms at {args.e_rate:,.0f} msg/s, first successful round "
                   "(`B: count` = count deliveries took less than B µs and at least B/2):\n")
        for s in e_setups:
            ok = [r for r in results["E"][s] if "error" not in r]
            if ok:
                out.append(f"- `{s}`: {str(ok[0].get('lat_hist', '')).replace(',', ', ')}")
        out.append("")
    f_setups = [s for s in setups if results["F"].get(s)]
    if f_setups:
        out.append("## F. 64 KiB payloads\n")
        out.append(f"As A with {args.f_messages:,} QoS 1 messages of {F_SIZE:,} bytes: {args.subscribers} offline "
                   f"persistent subscribers, one publisher, at most {args.window} unacknowledged "
                   f"({args.f_messages * F_SIZE / 2**20:,.0f} MiB of payload, queued for every subscriber). "
                   "Data on disk measured after a clean stop.\n")
        out.append(table(results, "F", f_setups, [
            ("publish_rate", "publish rate (msg/s, acked)", "rate", 1),
            ("publish_mbps", "publish rate (MB/s of payload)", "us", 1),
            ("broker_cpu_us_per_msg", "broker CPU time per published message (µs)", "us", 1),
            ("rss_kib", "broker RSS after publishing (MiB)", "mib", 1 / 1024),
            ("stop_secs", "clean stop, SIGTERM to exit (s)", "secs", 1),
            ("disk_bytes", "data on disk after stop (MiB, allocated)", "mib", 1 / 2**20),
        ], pairs_for("F", [("lmdb", "sqlite"), ("lmdb", "none"), ("lmdb-periodic", "lmdb")], f_setups)))
        out.append(f"\nPer round (msg/s): {samples(results, 'F', f_setups, 'publish_rate', 'rate')}.\n")
    g_setups = [s for s in restart_setups if results["G"].get(s)]
    if g_setups:
        out.append("## G. Many small sessions\n")
        per = "one QoS 1 message" if args.per_session == 1 else f"{args.per_session:,} QoS 1 messages"
        out.append(f"{args.sessions:,} persistent sessions (clean session off), each subscribed (QoS 1) to its "
                   f"own topic `{G_TOPIC}/I`, set up 100 at a time and then offline; one publisher sends {per} "
                   f"of {args.size} bytes to each topic (at most {args.window} unacknowledged). Backlog memory = "
                   "broker RSS after publishing - RSS after the sessions were set up. "
                   "The broker is stopped with SIGTERM and started again; restart = process start to first "
                   "CONNACK. The queued messages are not drained (B checks delivery after a restart).\n")
        out.append(table(results, "G", g_setups, [
            ("session_rate", "sessions set up (sessions/s)", "rate", 1),
            ("publish_rate", "publish rate (msg/s, acked)", "rate", 1),
            ("broker_cpu_us_per_msg", "broker CPU per published message (µs)", "us", 1),
            ("rss_loaded_kib", "broker RSS before the stop (MiB)", "mib", 1 / 1024),
            ("backlog_rss_kib", "of it, growth while the backlog was published (MiB)", "mib", 1 / 1024),
            ("backlog_anon_kib", "of the growth, anonymous memory (MiB)", "mib", 1 / 1024),
            ("stop_secs", "clean stop, SIGTERM to exit (s)", "secs", 1),
            ("disk_bytes", "data on disk after stop (MiB, allocated)", "mib", 1 / 2**20),
            ("restart_secs", "restart: process start to first CONNACK (s)", "secs", 1),
            ("rss_restart_kib", "broker RSS after restart (MiB)", "mib", 1 / 1024),
            ("rss_restart_file_kib", "of which file-backed (MiB)", "mib", 1 / 1024),
        ], pairs_for("G", [("lmdb", "sqlite"), ("lmdb", "snapshot"), ("lmdb-memory", "sqlite"),
                           ("lmdb", "lmdb-commit0")], g_setups)))
        out.append(f"\nPer round, restart (s): {samples(results, 'G', g_setups, 'restart_secs', 'secs')}.\n")
    h_setups = [s for s in restart_setups if s in RESTART_SETUPS and results["H"].get(s)]
    if h_setups:
        k, own = args.storm_sessions, args.storm_own
        per = own + H_GROUP_MSGS
        out.append("## H. Reconnect storm\n")
        out.append(f"{k:,} persistent sessions (MQTT 3.1.1, clean session off), each subscribed (QoS 1) to its own "
                   f"topic `{H_TOPIC}/I` and to the group topic `{H_GROUP}`, set up 100 at a time and then offline; "
                   f"one publisher sends {own} QoS 1 messages of {args.size} bytes to each own topic (round robin, "
                   f"{k * own:,} messages, at most {args.window} unacknowledged), then {H_GROUP_MSGS} to the group "
                   f"topic: {per} stored messages per session, {k * per:,} in all. The broker is stopped with "
                   "SIGTERM and started again; restart = process start to first CONNACK. Then every session "
                   "reconnects at once (non-blocking connects from 4 client threads, no pause) and drains: storm "
                   "= first CONNECT to the last session having all its messages; each session checks its own "
                   "(no gap, no duplicate, order kept, nothing meant for another session; any of them fails the "
                   "round). Broker CPU time of the storm = utime + stime (/proc/PID/stat) before the sessions "
                   "connect and after they have drained and disconnected; peak RSS = VmHWM after the storm (the "
                   "process started just before: its peak since the restart, restore included). The broker "
                   "listens with a backlog of 100: connections beyond it are dropped and retried by TCP after "
                   "1 s, 3 s, 7 s, ..., as in a real storm (the drop count is the system's ListenOverflows "
                   "during the storm, every process's); a session whose connection fails before its CONNACK "
                   "(TCP gave up or reset it, or no CONNACK within the keepalive, 60 s) connects again, as a "
                   "client would, and is counted.\n")
        out.append(table(results, "H", h_setups, [
            ("session_rate", "sessions set up (sessions/s)", "rate", 1),
            ("publish_rate", "publish rate (msg/s, acked)", "rate", 1),
            ("broker_cpu_us_per_msg", "broker CPU per published message (µs)", "us", 1),
            ("stop_secs", "clean stop, SIGTERM to exit (s)", "secs", 1),
            ("disk_bytes", "data on disk after stop (MiB, allocated)", "mib", 1 / 2**20),
            ("restart_secs", "restart: process start to first CONNACK (s)", "secs", 1),
            ("rss_restart_kib", "broker RSS after restart (MiB)", "mib", 1 / 1024),
            ("rss_restart_anon_kib", "of which anonymous (MiB)", "mib", 1 / 1024),
            ("storm_secs", "storm: first CONNECT to all drained (s)", "secs", 1),
            ("storm_first_ms", "storm: first CONNECT to first message (ms)", "us", 1),
            ("storm_rate", "storm: delivered (msg/s, all sessions)", "rate", 1),
            ("storm_cpu_secs", "storm: broker CPU time (s)", "secs", 1),
            ("storm_cpu_us_per_msg", "storm: broker CPU per delivered message (µs)", "us", 1),
            ("storm_hwm_kib", "storm: broker peak RSS since restart, VmHWM (MiB)", "mib", 1 / 1024),
            ("storm_anon_kib", "storm: broker anonymous memory after the drain, RssAnon (MiB)", "mib", 1 / 1024),
            ("storm_listen_drops", "storm: connections dropped by a full listen queue", "rate", 1),
            ("storm_reconnects", "storm: sessions that connected again before their CONNACK", "rate", 1),
        ], [(x, "sqlite") for x in h_setups if x != "sqlite" and "sqlite" in h_setups]))
        out.append(f"\nPer round, storm (s): {samples(results, 'H', h_setups, 'storm_secs', 'secs')}.\n")
        checks = []
        for s in h_setups:
            ok = [r for r in results["H"][s] if "error" not in r]
            if ok:
                checks.append(f"`{s}` sessions present {min(int(r['storm_sessions']) for r in ok)}/{k}, received "
                              f"{min(int(r['storm_received']) for r in ok):,}/{k * per:,}, duplicates "
                              f"{sum(int(r['storm_dups']) for r in ok)}, out of order "
                              f"{sum(int(r['storm_out_of_order']) for r in ok)}, for another session "
                              f"{sum(int(r['storm_bogus']) for r in ok)}")
        out.append("Storm checks over the successful rounds (anything missing, duplicated, out of order or for "
                   "another session fails the round): " + "; ".join(checks) + ".\n")
    return out


def report(results, info, drawn):
    a_setups = [s for s in args.setups if results["A"].get(s)]
    b_setups = [s for s in args.setups if s in RESTART_SETUPS and results["B"].get(s)]
    a_pairs = [p for p in [("lmdb", "sqlite"), ("lmdb", "sqlite-flush0"), ("lmdb", "none"),
                           ("lmdb-periodic", "lmdb"), ("lmdb-publish", "lmdb")] if p[0] in a_setups and p[1] in a_setups]
    b_pairs = [p for p in [("lmdb", "sqlite"), ("lmdb", "sqlite-flush0"), ("lmdb", "snapshot"), ("lmdb-memory", "sqlite")] if p[0] in b_setups and p[1] in b_setups]
    c_setups = [s for s in args.c_setups if results["C"].get(s)]
    probe_ok = any(probe_rounds(results))
    more_setups = [s for s in args.setups if any(results[sc].get(s) for sc in "DEF")]
    g_setups = [s for s in args.setups if s in RESTART_SETUPS and results["G"].get(s)]
    h_setups = [s for s in args.setups if s in RESTART_SETUPS and results["H"].get(s)]
    used = set(a_setups) | set(b_setups) | set(c_setups) | set(more_setups) | set(g_setups) | set(h_setups)
    mib = 1 / 1024
    out = []
    out.append("# Benchmarks\n")
    out.append("Benchmarks are not tests: they measure one machine at one moment and judge nothing. "
               "The test suite is `scripts/test`. Numbers from a shared or virtual machine are noisy; "
               "compare setups measured in the same run only. Offline queues on disk "
               "(`plugin_opt_queue_storage disk`) against persist-sqlite: "
               "[benchmarks-offline-queues.md](benchmarks-offline-queues.md). What bounds the ratios to "
               "`none` on this machine: [performance.md](performance.md).\n")
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
    if info.get("lmdb_plugin") and used & set(LMDB_SETUPS):
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
    if "sqlite-flush0" in used:
        out.append("- `sqlite-flush0`: persist-sqlite with `plugin_opt_flush_period 0`: a commit per "
                   "broker loop iteration (still not fsynced).")
    out.append("- `lmdb`: persist-lmdb with its defaults (`plugin_opt_sync tick`: the changes of "
               "`plugin_opt_commit_interval_ms` (100 ms) in one LMDB write transaction, fdatasync'd at commit; see "
               "[durability.md](durability.md))."
               + ("" if used & {"lmdb-periodic", "lmdb-publish", "sync-floor"} else "\n"))
    if "lmdb-periodic" in used:
        out.append("- `lmdb-periodic`: persist-lmdb with `plugin_opt_sync periodic`: a transaction per "
                   "commit interval as in `tick`, synced every `plugin_opt_sync_interval_ms` (1000 ms)."
                   + ("" if used & {"lmdb-publish", "sync-floor"} else "\n"))
    if "lmdb-commit0" in used:
        out.append("- `lmdb-commit0`: persist-lmdb with `plugin_opt_commit_interval_ms 0`: a commit every broker "
                   "loop iteration, as before the commit interval existed.\n")
    if "lmdb-memory" in used:
        out.append("- `lmdb-memory`: persist-lmdb with `plugin_opt_queue_storage memory`: the broker holds "
                   "every offline session's messages as well, as its own persistence does (the default "
                   "before 2026-12-07; `lmdb` keeps them in the database only).\n")
    if "lmdb-ttl" in used:
        out.append("- `lmdb-ttl`: `lmdb` with `plugin_opt_offline_ttl 7d`: the bookkeeping of "
                   "queue limits and expiry is on (no message expires in the run).\n")
    if "lmdb-publish" in used:
        out.append("- `lmdb-publish`: persist-lmdb with `plugin_opt_sync publish`: as `tick`, and every "
                   "accepted QoS 1/2 PUBLISH is written to the journal (a ring file) with pwrite on an "
                   "O_DSYNC descriptor before its PUBACK leaves the broker; the store commits every 50 ms."
                   + ("" if "sync-floor" in used else "\n"))
    if "sync-floor" in used:
        out.append("- `sync-floor`: an anchor, not a product: `bench/syncfloor.c`, a plugin whose only work "
                   "is one 200-byte pwrite on an O_DSYNC descriptor per QoS 1/2 PUBLISH (MESSAGE_IN), before "
                   "its PUBACK; it stores nothing else and restores nothing.\n")

    out.append("## Targets\n")
    out.append("persist-lmdb in its default mode (`lmdb`) against the other setups of this run, from the "
               "medians below (the issue's targets; a benchmark, not a test):\n")
    out += targets(results)
    out.append("")
    png, note = drawn
    if png:
        rel = os.path.relpath(png, os.path.dirname(os.path.abspath(args.out)) if args.out and not args.no_write
                              else SRC)
        out.append(f"![Rate of each setup relative to none, per scenario]({rel})\n")
        out.append("Each setup's rate relative to `none` (median of the rounds): A and F publish rate, C publish "
                   f"rate at window {args.c_windows[-1]}, D publish rate of all publishers, E delivered rate.\n")
    elif note:
        out.append(note + "\n")

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
    if b_setups:
        total = args.subscribers * args.restart_messages
        out.append("## B. Restart with queued messages\n")
        out.append(f"{args.subscribers} offline subscribers x {args.restart_messages:,} queued QoS 1 "
                   f"messages of {args.size} bytes = {total:,} queued client messages. Anonymous memory "
                   "growth = the broker's RssAnon 0.5 s and 3 s after the last PUBACK - after the "
                   "subscribers were set up. The broker is "
                   "stopped with SIGTERM and started again; restart = time from starting the process "
                   "until a CONNECT is answered with CONNACK (polled every 5 ms). "
                   + (f"Then (in the first {min(args.drain_rounds, args.rounds)} round(s)) the subscribers "
                      "reconnect and drain everything; every message is checked "
                      "(no gap, no duplicate, order kept). " if args.drain_rounds else "")
                   + "`none` keeps nothing, so it has no row here.\n")
        metrics = [
            ("load_rate", "publish rate while loading (msg/s)", "rate", 1),
            ("load_cpu_us_per_msg", "broker CPU per published message while loading (µs)", "us", 1),
            ("rest_anon_kib", "anonymous memory growth, 0.5 s after the last PUBACK (MiB)", "mib", mib),
            ("rest3_anon_kib", "anonymous memory growth, 3 s after the last PUBACK (MiB)", "mib", mib),
            ("rss_loaded_kib", "broker RSS with the backlog queued (MiB)", "mib", mib),
            ("stop_secs", "clean stop, SIGTERM to exit (s)", "secs", 1),
            ("disk_bytes", "data on disk after stop (MiB, allocated)", "mib", 1 / (1024 * 1024)),
            ("disk_bytes_per_msg", "data on disk per queued client message (bytes)", "rate", 1),
            ("restart_secs", "restart: process start to first CONNACK (s)", "secs", 1),
            ("rss_restart_kib", "broker RSS after restart (MiB)", "mib", mib),
            ("rss_restart_file_kib", "of which file-backed (MiB)", "mib", mib),
        ]
        if args.drain_rounds:
            n = min(args.drain_rounds, args.rounds)
            metrics.append(("drain_rate", f"drain after restart (msg/s, all subscribers; "
                            f"{n} round{'s' if n > 1 else ''})", "rate", 1))
            metrics.append(("drain_first_ms", "drain: first CONNECT to first message (ms)", "us", 1))
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

    if c_setups or probe_ok:
        out += report_c(results, c_setups)
    out += report_more(results, args.setups, args.setups)

    out.append("## Reading these numbers\n")
    out.append("- The setups promise different things. `none` and `snapshot` keep messages in memory only "
               "while running (`snapshot` writes them out at shutdown); `sqlite` acknowledges a message "
               "before it is committed (every 5 s, without fsync); `lmdb` (tick) commits and syncs "
               "once per broker loop iteration. Rates compare costs, not equal guarantees.")
    out.append("- The publish rate is wall-clock and moves with whatever else the machine runs (see the "
               "load average above); broker CPU time per message is less sensitive to that. The broker is "
               "single-threaded: CPU time below the wall time is time it waits (for the client, the disk or "
               "a CPU).")
    if b_setups:
        out.append("- The restart reads the data files from the page cache (they were just written)"
                   + (", except where the page cache was dropped before the restart (`--drop-caches`)."
                      if args.drop_caches else "; `--drop-caches` measures a cold start."))
    out.append("- RSS includes file-backed pages (an LMDB map counts there once read); those are page "
               "cache the kernel can reclaim, the rest is the broker's own memory."
               + ("" if c_setups or probe_ok else "\n"))
    if c_setups or probe_ok:
        out.append("- Scenario C compares promises as well as costs: only `lmdb-publish` has a message on "
                   "disk when its PUBACK leaves; `lmdb` (tick) syncs once per commit interval, after the "
                   "PUBACKs it covers are written; `lmdb-periodic` syncs every second; `sqlite` "
                   "and `sqlite-flush0` never sync a commit. A disk's sync rate on a shared or virtual "
                   "machine can move tenfold from one second to the next (compare the probe's latencies "
                   "between rounds): trust the ratios of slices measured seconds apart more than rates "
                   "measured at different moments.\n")

    errors = [(sc, s, r["error"]) for sc in SCENARIOS for s, rs in results[sc].items()
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
    out.append("`scripts/bench` (= `scripts/root.sh bench/run.sh`) builds `bench/loadgen` (C, libmosquitto), "
               "`bench/syncprobe` (C) and `bench/syncfloor` (a plugin, scenario C) and runs `bench/run.py`; "
               "one command regenerates this report and its chart: `scripts/bench`. Options: `--quick`, `--rounds R`, `--messages N` (scenarios A and D), "
               "`--restart-messages M` (scenario B, per subscriber), `--publishers P` (D), `--e-messages N`, "
               "`--e-rate R`, `--e-secs S` (E), `--f-messages N` (F), `--sessions N` and `--per-session M` (G), "
               "`--storm-sessions N` and `--storm-own M` (H), `--setups` "
               f"(all scenarios but C, from {','.join(ALL_SETUPS)}), `--c-setups` (scenario C), `--c-secs S` "
               "(scenario C, publishing per setup and window), `--c-slices N`, `--c-windows 1,100`, "
               f"`--probe-size B`, `--scenarios {','.join(SCENARIOS)}`, `--drain-rounds R` / `--no-drain`, "
               "`--drop-caches`, `--out FILE`, `--gnuplot PATH`, "
               "`--no-build` (use `build/mosquitto_persist_lmdb.so` as it is). Raw results: "
               f"`{os.path.relpath(args.json, SRC)}`. Per broker and round:\n")
    out.append("```sh")
    out.append("mosquitto -c DIR/mosquitto.conf &          # config below; T0 = start time")
    out.append("loadgen wait-connect -p PORT -S T0")
    if a_setups or b_setups:
        out.append(f"loadgen subscribe-offline -p PORT -k {args.subscribers}             # A, B")
    if a_setups:
        out.append(f"loadgen publish -p PORT -n {args.messages} -s {args.size} -q 1 -w {args.window}   # A")
    if b_setups:
        out.append(f"loadgen publish -p PORT -n {args.restart_messages} -s {args.size} -q 1 -w {args.window}   # B")
        out.append("kill -TERM $PID; wait                        # B: stop, measure DIR/data")
        out.append("mosquitto -c DIR/mosquitto.conf &; loadgen wait-connect -p PORT -S T0   # B: restart")
        if args.drain_rounds:
            out.append(f"loadgen drain -p PORT -k {args.subscribers} -n {args.restart_messages}   # B")
    if c_setups or probe_ok:
        out.append("loadgen subscribe-offline -p PORT -k 1                       # C, fresh broker per window")
        out.append(f"loadgen publish -p PORT -n {C_MESSAGES_CAP} -s {args.size} -q 1 -w W -D {args.c_secs:g}   "
                   f"# C, W = {', '.join(map(str, args.c_windows))}")
        if C_JUDGED in c_setups and args.c_slices:
            t = args.c_secs / args.c_slices
            out.append(f"# C, {C_JUDGED} at window {args.c_windows[0]}, instead: {args.c_slices} times, alternately")
            out.append(f"syncprobe -d {shown(args.data_dir)}/C-probe-... -t {t:g} -s {args.probe_size}")
            out.append(f"loadgen publish -p PORT -n {C_MESSAGES_CAP} -s {args.size} -q 1 -w {args.c_windows[0]} -D {t:g}")
        else:
            out.append(f"syncprobe -d {shown(args.data_dir)}/C-probe-rR -t {args.c_secs:g} -s {args.probe_size}   # C: the disk")
    if results["D"]:
        out.append("loadgen subscribe-offline -p PORT -k 1                       # D")
        out.append(f"loadgen publish -p PORT -n {args.messages} -P {args.publishers} -s {args.size} -q 1 "
                   f"-w {args.window}   # D")
        out.append(f"loadgen drain -p PORT -k 1 -n {args.messages} -P {args.publishers}   # D")
    if results["E"]:
        n = max(1, int(args.e_rate * args.e_secs))
        out.append(f"loadgen subscribe-online -p PORT -k {E_SUBSCRIBERS} -n {args.e_messages} -q 1 -i online- &"
                   "   # E: publish once it is ready")
        out.append(f"loadgen publish -p PORT -n {args.e_messages} -s {args.size} -q 1 -w {args.window}   # E")
        out.append(f"loadgen subscribe-online -p PORT -k {E_SUBSCRIBERS} -n {n} -q 1 -i online- &   # E: latency")
        out.append(f"loadgen publish -p PORT -n {n} -s {args.size} -q 1 -w {args.window} -R {args.e_rate:g}   # E")
    if results["F"]:
        out.append(f"loadgen subscribe-offline -p PORT -k {args.subscribers}             # F")
        out.append(f"loadgen publish -p PORT -n {args.f_messages} -s {F_SIZE} -q 1 -w {args.window}   # F")
        out.append("kill -TERM $PID; wait                        # F: stop, measure DIR/data")
    if results["G"]:
        out.append(f"loadgen subscribe-offline -p PORT -k {args.sessions} -e -t {G_TOPIC} -i g-   # G")
        out.append(f"loadgen publish -p PORT -n {args.sessions * args.per_session} -e -k {args.sessions} -t {G_TOPIC} "
                   f"-s {args.size} -q 1 -w {args.window}   # G")
        out.append("kill -TERM $PID; wait; mosquitto -c DIR/mosquitto.conf &; loadgen wait-connect -p PORT -S T0"
                   "   # G")
    if results["H"]:
        k, n = args.storm_sessions, args.storm_sessions * args.storm_own
        out.append(f"loadgen subscribe-offline -p PORT -k {k} -e -t {H_TOPIC} -g {H_GROUP} -i h-   # H")
        out.append(f"loadgen publish -p PORT -n {n} -e -k {k} -t {H_TOPIC} -g {H_GROUP} -G {H_GROUP_MSGS} "
                   f"-s {args.size} -q 1 -w {args.window}   # H")
        out.append("kill -TERM $PID; wait; mosquitto -c DIR/mosquitto.conf &; loadgen wait-connect -p PORT -S T0"
                   "   # H")
        out.append(f"loadgen drain -p PORT -e -k {k} -n {n} -G {H_GROUP_MSGS} -i h-   # H: the storm, broker "
                   "/proc/PID/stat and status read before and after")
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
    if "sqlite-flush0" in used:
        out.append("# sqlite-flush0: as sqlite, plus")
        out.append("plugin_opt_flush_period 0")
    out.append("# lmdb")
    out.append(f"global_plugin {shown(args.lmdb_plugin)}")
    out.append("plugin_opt_key_file DIR/key                 # 32 random bytes, mode 600")
    out.append("plugin_opt_db_path DIR/data")
    for s in ("lmdb-periodic", "lmdb-publish"):
        if s in used:
            out.append(f"# {s}: as lmdb, plus")
            out.append(f"plugin_opt_sync {LMDB_SETUPS[s]}")
    out.append("```")
    return "\n".join(out) + "\n"


def main():
    global args
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small run: 20,000 messages in A and D, 20,000 per subscriber in B, 2 s per step "
                         "in C, 10,000 in E, 500 in F, 1,000 sessions in H")
    ap.add_argument("--rounds", type=int, help="rounds (default 3)")
    ap.add_argument("--messages", type=int, help="scenarios A and D messages (default 100,000)")
    ap.add_argument("--restart-messages", type=int,
                    help="scenario B messages per subscriber (default 200,000)")
    ap.add_argument("--subscribers", type=int, default=5,
                    help="scenarios A, B, F: offline subscribers (default 5)")
    ap.add_argument("--publishers", type=int, default=4, help="scenario D: publishers (default 4)")
    ap.add_argument("--e-messages", type=int,
                    help="scenario E: messages at full speed (default 50,000; 10,000 with --quick)")
    ap.add_argument("--e-rate", type=float, default=1000,
                    help="scenario E: publish rate of the latency pass (msg/s, default 1000)")
    ap.add_argument("--e-secs", type=float,
                    help="scenario E: seconds of the latency pass (default 5; 2 with --quick)")
    ap.add_argument("--f-messages", type=int,
                    help="scenario F: 64 KiB messages (default 2,000; 500 with --quick)")
    ap.add_argument("--sessions", type=int,
                    help="scenario G: sessions (default 10,000)")
    ap.add_argument("--per-session", type=int, default=1,
                    help="scenario G: messages queued for each session (default 1)")
    ap.add_argument("--storm-sessions", type=int,
                    help="scenario H: sessions that reconnect at once (default 5,000; 1,000 with --quick)")
    ap.add_argument("--storm-own", type=int, default=19,
                    help="scenario H: messages to each session's own topic, before the one to the group "
                         "topic (default 19)")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--setups", default=",".join(DEFAULT_SETUPS),
                    help=f"scenarios A, B, D, E, F, G, H (B, G and H: only {','.join(RESTART_SETUPS)}); "
                         f"comma-separated, from {','.join(ALL_SETUPS)} (default {','.join(DEFAULT_SETUPS)})")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, from {','.join(SCENARIOS)} (default all)")
    ap.add_argument("--c-setups", default=",".join(C_SETUPS),
                    help=f"scenario C setups, from {','.join(ALL_SETUPS)} (default {','.join(C_SETUPS)})")
    ap.add_argument("--c-secs", type=float,
                    help="scenario C: seconds of publishing per setup and window, and per probe variant "
                         "(default 5; 2 with --quick)")
    ap.add_argument("--c-slices", type=int,
                    help=f"scenario C: {C_JUDGED} at the first window publishes in this many slices, each "
                         "next to a probe of the same length (default 5; 2 with --quick; 0: one probe per "
                         "round in the rotation)")
    ap.add_argument("--c-windows", default="1,100",
                    help="scenario C: publisher windows, the first one is judged against the probe (default 1,100)")
    ap.add_argument("--probe-size", type=int, default=200,
                    help="scenario C: bytes per synced write of the disk probe (default 200, about one "
                         "journal record of a 100-byte message)")
    ap.add_argument("--drain-rounds", type=int, default=1,
                    help="scenario B: drain after the restart in the first R rounds (default 1)")
    ap.add_argument("--no-drain", dest="drain_rounds", action="store_const", const=0,
                    help="scenario B: never drain after the restart")
    ap.add_argument("--drop-caches", action="store_true",
                    help="scenario B: drop the page cache before the restart (needs a writable /proc/sys)")
    ap.add_argument("--conf", dest="conf_extra", action="append", default=[], metavar="LINE",
                    help="extra line for every broker config, e.g. 'set_tcp_nodelay true' (repeatable)")
    ap.add_argument("--out", help="markdown report, its chart next to it as .png (default "
                                   "docs/benchmarks.md for a full run of all scenarios, none for --quick "
                                   "or --scenarios)")
    ap.add_argument("--gnuplot", default=shutil.which("gnuplot"),
                    help="gnuplot binary for the chart (default: from PATH; without it, no chart)")
    ap.add_argument("--no-write", action="store_true", help="only print the report")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--sqlite-plugin", default=SQLITE_PLUGIN)
    ap.add_argument("--lmdb-plugin", default=os.environ.get("PERSIST_LMDB_BENCH_PLUGIN") or
                    os.path.join(SRC, "build", "mosquitto_persist_lmdb.so"))
    ap.add_argument("--loadgen", default=os.path.join(SRC, "build-bench", "tool", "loadgen"))
    ap.add_argument("--syncprobe", default=os.path.join(SRC, "build-bench", "tool", "syncprobe"))
    ap.add_argument("--syncfloor", default=os.path.join(SRC, "build-bench", "tool", "syncfloor.so"))
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
    if args.c_secs is None:
        args.c_secs = 2.0 if args.quick else 5.0
    if args.c_slices is None:
        args.c_slices = 2 if args.quick else 5
    if args.e_messages is None:
        args.e_messages = 10000 if args.quick else 50000
    if args.e_secs is None:
        args.e_secs = 2.0 if args.quick else 5.0
    if args.f_messages is None:
        args.f_messages = 500 if args.quick else 2000
    if args.sessions is None:
        args.sessions = 10000
    if args.storm_sessions is None:
        args.storm_sessions = 1000 if args.quick else 5000
    if args.storm_sessions < 1 or args.storm_own < 1:
        ap.error("--storm-sessions and --storm-own need 1 or more")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if args.out is None and not args.quick and sorted(scenarios) == SCENARIOS:
        # Only a full run of every scenario replaces the report.
        args.out = os.path.join(SRC, "docs", "benchmarks.md")
    args.data_dir = os.path.abspath(args.data_dir)
    args.json = os.path.join(args.data_dir, "results.json")
    args.setups = [s for s in args.setups.split(",") if s]
    args.c_setups = [s for s in args.c_setups.split(",") if s]
    for s in args.setups + args.c_setups:
        if s not in ALL_SETUPS:
            ap.error(f"unknown setup {s}")
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    try:
        args.c_windows = [int(w) for w in args.c_windows.split(",") if w]
    except ValueError:
        ap.error(f"--c-windows: not a list of numbers: {args.c_windows}")
    if not args.c_windows or min(args.c_windows) < 1 or args.c_secs <= 0 or args.c_slices < 0:
        ap.error("--c-windows needs windows >= 1, --c-secs a positive time, --c-slices 0 or more")
    if not set(scenarios) - {"C"}:
        args.setups = []
    if "C" not in scenarios:
        args.c_setups = []

    skipped = []
    for s, path in [("sqlite", args.sqlite_plugin), ("sqlite-flush0", args.sqlite_plugin),
                    ("sync-floor", args.syncfloor)] + \
            [(s, args.lmdb_plugin) for s in LMDB_SETUPS]:
        if (s in args.setups or s in args.c_setups) and not os.path.exists(path):
            skipped.append((s, f"{shown(path)} does not exist"))
            args.setups = [x for x in args.setups if x != s]
            args.c_setups = [x for x in args.c_setups if x != s]
            log(f"bench: skipping {s}: {path} does not exist")
    if not os.access(args.loadgen, os.X_OK):
        ap.error(f"{args.loadgen} is not built (bench/run.sh builds it)")
    if "C" in scenarios and not os.access(args.syncprobe, os.X_OK):
        ap.error(f"{args.syncprobe} is not built (bench/run.sh builds it)")

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(kill_brokers)
    os.makedirs(args.data_dir, exist_ok=True)

    info = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_before": "%.2f" % os.getloadavg()[0],
            "command": "scripts/bench" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:])),
            "skipped": skipped}
    info.update(machine())
    if set(args.setups + args.c_setups) & set(LMDB_SETUPS):
        info["lmdb_plugin"] = os.path.relpath(args.lmdb_plugin, SRC)
        info["lmdb_plugin_mtime"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(args.lmdb_plugin), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = {sc: {} for sc in SCENARIOS}
    t_start = time.monotonic()
    # Without the judged setup (or with --c-slices 0) the probe takes its own turn.
    c_items = args.c_setups + ([] if C_JUDGED in args.c_setups and args.c_slices else ["probe"])
    for rnd in range(args.rounds):
        order = args.setups[rnd % max(1, len(args.setups)):] + args.setups[:rnd % max(1, len(args.setups))]
        c_order = c_items[rnd % len(c_items):] + c_items[:rnd % len(c_items)]
        restart_order = [s for s in order if s in RESTART_SETUPS]
        for sc, fn, setups in (("A", run_a, order), ("B", run_b, restart_order), ("C", run_c, c_order),
                               ("D", run_d, order), ("E", run_e, order), ("F", run_f, order),
                               ("G", run_g, restart_order), ("H", run_h, restart_order)):
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
                    brief = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else
                                     f"{k}=[{len(v)}]" if isinstance(v, list) else f"{k}={v}"
                                     for k, v in r.items() if k != "lat_hist")
                    log(f"bench: {sc}/{s} round {rnd + 1}/{args.rounds}: {brief} "
                        f"({time.monotonic() - t:.0f} s)")
    info["elapsed"] = time.monotonic() - t_start
    info["load_after"] = "%.2f" % os.getloadavg()[0]

    with open(args.json, "w") as f:
        json.dump({"info": info, "args": {k: v for k, v in vars(args).items()}, "results": results},
                  f, indent=1)
    text = report(results, info, chart(results))
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
