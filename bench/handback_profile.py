#!/usr/bin/env python3
"""Where the broker's instructions go while offline messages are stored
(--phase publish) or while stored sessions come back (--phase handback, the
default): a callgrind profile. Measures, does not judge.

N persistent MQTT 5 sessions, each subscribed to its own topic inbox/<n>,
get M QoS 1 messages of 100 bytes while offline, round robin; the broker
stops cleanly and starts again; each session reconnects in turn and takes
its messages; the broker stops. The broker runs under valgrind
--tool=callgrind in the phase profiled. Prints the instruction counts
(inclusive) of the whole run and of the plugin's main parts: for publish,
the intake (the broker's message events), the journal and the store's
writer thread; for handback, the restore, the hand-backs (queue_load) and
the writer thread. The
figures are instruction counts, not times: under callgrind the timed
parts of the plugin (memory release once a second) run far more often per
message than at native speed, so compare builds, not absolute shares.

Run in the build root (scripts/root.sh): python3 bench/handback_profile.py
[--plugin PATH] [--phase publish|handback] [--sessions N] [--messages M] [--keep]"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test" / "integration"))

from harness import V5, Broker, Client, free_port, write_key  # noqa: E402

WORK = Path(__file__).resolve().parents[1] / "build" / "bench-handback-profile"
PARTS = {"handback": ["persist_restore_cb", "queue_load", "writer_main"],
         "publish": ["on_base_msg_add", "on_client_msg_add", "on_client_msg_delete", "on_base_msg_delete",
                     "on_tick", "writer_main"]}


def profile(b, out):
    out.touch()
    out.chmod(0o666)
    b.command_prefix = ["valgrind", "--tool=callgrind", "--vgdb=no", f"--callgrind-out-file={out}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plugin", default=str(Path(__file__).resolve().parents[1] / "build"
                                            / "mosquitto_persist_lmdb.so"))
    ap.add_argument("--phase", choices=sorted(PARTS), default="handback")
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the work directory and the profile")
    a = ap.parse_args()

    subprocess.run(["rm", "-rf", str(WORK)], check=True)
    WORK.mkdir(parents=True)
    key = WORK / "key.bin"
    write_key(key)
    b = Broker(WORK, free_port(), key, Path(a.plugin))
    b.log_types = ["error", "warning", "notice"]
    # The broker writes the profile at exit, after it has dropped root.
    out = b.data_dir / "callgrind.out"
    if a.phase == "publish":
        profile(b, out)
    b.start()
    for i in range(a.sessions):
        with Client(b, f"s{i}", version=V5, persistent=True, session_expiry=3600) as c:
            c.subscribe(f"inbox/{i}", 1)
    with Client(b, "pub", version=V5) as p:
        for _ in range(a.messages):
            for i in range(a.sessions):
                p.publish(f"inbox/{i}", b"x" * 100, qos=1)
    b.settle()
    b.stop()

    if a.phase == "handback":
        profile(b, out)
    else:
        b.command_prefix = []
    b.start()
    got = 0
    for i in range(a.sessions):
        with Client(b, f"s{i}", version=V5, persistent=True, session_expiry=3600) as c:
            got += len(c.collect(a.messages, timeout=120))
    time.sleep(0.5)
    b.stop()
    b.close()
    if got != a.sessions * a.messages:
        print(f"received {got} of {a.sessions * a.messages}", file=sys.stderr)
        return 1

    report = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True,
                            text=True, check=True).stdout
    total = next(l for l in report.splitlines() if "PROGRAM TOTALS" in l).split()[0]
    print(f"{a.sessions} sessions x {a.messages} messages, phase {a.phase}, plugin {a.plugin}")
    print(f"{'whole run':24} {total:>16} instructions")
    for part in PARTS[a.phase]:
        line = next((l for l in report.splitlines() if f":{part} [" in l), None)
        print(f"{part:24} {line.split()[0] if line else '-':>16}")
    if not a.keep:
        subprocess.run(["rm", "-rf", str(WORK)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
