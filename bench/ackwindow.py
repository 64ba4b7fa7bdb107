#!/usr/bin/env python3
"""What journaling sessions, subscriptions and wills costs, and the window it
leaves. Measures, does not judge.

1. The window, in plugin_opt_sync publish mode, where the journal reaches
   the disk with a synced pwrite or an fdatasync that strace shows: for N
   persistent MQTT 5 clients that connect (with a will), subscribe and
   disconnect, the time from the write of the broker's CONNACK to the
   journal's next write to the disk (the records of the new session and its
   will, written to the mapping right after the CONNACK, synced at the
   loop's end), from the SUBSCRIBE's arrival to its record on the disk, and
   from that to the SUBACK's write (the record must come first).
2. The cost: broker CPU time per connect + subscribe + disconnect cycle of a
   persistent client (the reconnection of a fleet), for the plugin given and,
   with --compare, another build of it, in tick and publish modes, rounds
   interleaved; CPU from /proc/<broker>/stat. Data on the disk (build/), not
   on the build root's tmpfs.

Run in the build root (scripts/root.sh): python3 bench/ackwindow.py
[--plugin PATH] [--compare PATH] [--clients N] [--rounds R]"""

import argparse
import os
import re
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "integration"))

from harness import (  # noqa: E402
    Broker, free_port, give_to_broker, plugin_path, stop_traced, tracee_pid, write_key,
)
from rawmqtt import RawClient, mqtt_string, varint  # noqa: E402


def cycle(port: int, cid: str, will: bool) -> None:
    """A persistent MQTT 5 client: CONNECT (with a will), SUBSCRIBE, DISCONNECT."""
    c = RawClient(port, cid, version=5) if not will else will_client(port, cid)
    c.subscribe(f"inbox/{cid}", 1)
    c.send(0xE0, b"\x00\x00")
    c.close()


def will_client(port: int, cid: str) -> RawClient:
    """RawClient's CONNECT with a will (QoS 1, topic status/<cid>)."""
    c = RawClient.__new__(RawClient)
    c.version = 5
    import socket
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    p = b"\x11" + struct.pack("!I", 3600)
    props = varint(len(p)) + p
    flags = 0x04 | 0x08  # will, will QoS 1
    body = mqtt_string("MQTT") + bytes([5, flags]) + struct.pack("!H", 60) + props
    body += mqtt_string(cid) + b"\x00" + mqtt_string(f"status/{cid}") + mqtt_string(b"gone")
    c.send(0x10, body)
    kind, _, data = c.read()
    assert kind == 2 and data[1] == 0, data
    return c


# On the disk, not in /tmp (a tmpfs in the build root, where a sync costs nothing).
WORK = Path(__file__).resolve().parents[1] / "build" / "bench-ackwindow"


def broker_for(root: Path, plugin: Path, mode: str, strace: Path | None = None) -> Broker:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    give_to_broker(root)
    key = root / "key.bin"
    write_key(key)
    b = Broker(root, free_port(), key, plugin)
    b.plugin_opts["sync"] = mode
    b.log_types = ["error", "warning"]
    if strace:
        b.command_prefix = ["strace", "-f", "-tt", "-T", "-xx", "-e", "trace=sendto,recvfrom,read,pwrite64,write,fdatasync",
                            "-e", "signal=none", "-o", str(strace)]
    return b


def window(plugin: Path, n: int) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ackwin-", dir=WORK) as d:
        os.chmod(d, 0o755)
        trace = Path(d) / "strace.out"
        b = broker_for(Path(d) / "broker", plugin, "publish", trace)
        b.start()
        try:
            for i in range(n):
                cycle(b.port, f"w{i}", True)
            time.sleep(0.2)
            pid = tracee_pid(b.proc.pid)
            journal_fds = {int(f.name) for f in Path(f"/proc/{pid}/fd").iterdir()
                           if os.readlink(f).endswith("/journal")}
        finally:
            stop_traced(b)
            b.close()
        lines = trace.read_text(errors="replace").splitlines()

    def start(line):
        h, m, sec = line.split()[1].split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)

    def end(line):
        d = re.search(r"<([0-9.]+)>\s*$", line)
        return start(line) + (float(d.group(1)) if d else 0.0)

    # CONNACK is the write that starts with byte 0x20, SUBSCRIBE the read
    # that starts with 0x82, SUBACK the write with 0x90; a journal record is
    # on the disk at the end of its synced pwrite64 or of the fdatasync of
    # the journal that follows its write to the mapping.
    def journal_sync(line):
        m = re.search(r"(pwrite64|fdatasync)\((\d+)", line)
        return m and int(m.group(2)) in journal_fds
    connack, sub_on_disk, sub_before_ack = [], [], []
    state, t0, last = None, 0.0, 0.0
    for line in lines:
        if re.search(r'(sendto|write)\(\d+, "\\x20', line):
            state, t0, last = "connack", start(line), 0.0
        elif re.search(r'(read|recvfrom)\(\d+, "\\x82', line):
            state, t0, last = "subscribe", start(line), 0.0
        elif journal_sync(line) and state:
            last = end(line)
            if state == "connack":
                connack.append((last - t0) * 1000)
                state = None
        elif re.search(r'(sendto|write)\(\d+, "\\x90', line) and state == "subscribe":
            if last:
                sub_on_disk.append((last - t0) * 1000)
                sub_before_ack.append((start(line) - last) * 1000)
            state = None

    def stats(v):
        return {"n": len(v), "min_ms": round(min(v), 3), "median_ms": round(statistics.median(v), 3),
                "max_ms": round(max(v), 3)} if v else {"n": 0}
    return {"connack_to_records_on_disk": stats(connack), "subscribe_to_record_on_disk": stats(sub_on_disk),
            "record_on_disk_to_suback": stats(sub_before_ack)}


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def cost(plugins: dict, n: int, rounds: int) -> dict:
    results = {}
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ackcost-", dir=WORK) as d:
        os.chmod(d, 0o755)
        for r in range(rounds):
            for name, plugin in (list(plugins.items()) if r % 2 == 0 else list(plugins.items())[::-1]):
                for mode in ("tick", "publish"):
                    b = broker_for(Path(d) / f"{name}-{mode}-{r}", plugin, mode)
                    b.start()
                    try:
                        c0 = cpu_seconds(b.proc.pid)
                        t0 = time.monotonic()
                        for i in range(n):
                            cycle(b.port, f"c{i}", False)
                        wall = time.monotonic() - t0
                        cpu = cpu_seconds(b.proc.pid) - c0
                    finally:
                        b.stop()
                    results.setdefault((name, mode), []).append((cpu / n * 1e6, n / wall))
    return {f"{name} {mode}": {"broker_cpu_us_per_cycle": round(statistics.median(c for c, _ in v), 1),
                               "cycles_per_s": round(statistics.median(w for _, w in v))}
            for (name, mode), v in results.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin", type=Path, default=plugin_path())
    ap.add_argument("--compare", type=Path, help="another build of the plugin, measured alongside")
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print("window (publish mode, strace):", window(a.plugin, 200))
    plugins = {"this": a.plugin}
    if a.compare:
        plugins["compare"] = a.compare
    for k, v in cost(plugins, a.clients, a.rounds).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
