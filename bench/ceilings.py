#!/usr/bin/env python3
"""Cost ceilings: what the A and E ratios (lmdb / none) would be if parts of persist-lmdb cost nothing.

Builds variants of the plugin from a copy of the current sources, each with one part cut out, and
runs scenarios A (offline fan-out) and E (online pass-through) of bench/run.py against `none` with
each, the variants interleaved. A variant is a measuring device, not a product: it loses data.

  full             the plugin as it is
  no-queue-writes  the writer thread neither seals nor writes queue entries (any layout of the
                   queue records saves at most this)
  no-queue         store_queue_append / store_queue_update / store_queue_remove return at once (no queue work on
                   either thread)
  no-journal       MESSAGE_IN is ignored (no intake journal record per accepted publish)
  no-op            every event but the restore is ignored (the broker's own cost of the plugin
                   interface)

Run where Mosquitto 2.1 is: `scripts/root.sh python3 bench/ceilings.py [--rounds R] [--reps N]`.
Prints a table of medians; docs/performance.md explains how to read it. Not a test.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NOOP = ("int mosquitto_plugin_init(",
        "static int noop_cb(int e, void *d, void *u){(void)e;(void)d;(void)u;return 0;}\n"
        "int mosquitto_plugin_init(")
REGISTER = "persist_events[i].event, persist_events[i].cb,"


def queue_entry_return(sig):
    return (sig + "\n{\n", sig + "\n{\n\tif(st){\n\t\treturn STORE_OK;\n\t}\n")


VARIANTS = {
    "full": [],
    "no-queue-writes": [
        ("plugin/store_buffer.c", "\t\tif(p[0] == OP_PUT || p[0] == OP_APPEND){\n\t\t\tstore_ad",
         "\t\tif((p[0] == OP_PUT || p[0] == OP_APPEND) && p[1] != DB_QUEUE){\n\t\t\tstore_ad"),
        ("plugin/store_commit.c", "\t\t\t\tif(p[1] == DB_QUEUE){\n\t\t\t\t\trc = queue_apply(st, txn, &queue_cur, "
         "op == OP_APPEND, k.mv_data, klen, vlen, 0, &added);",
         "\t\t\t\tif(p[1] == DB_QUEUE){\n\t\t\t\t\tbreak;"),
        ("plugin/store_commit.c", "\t\t\t\tif(p[1] == DB_QUEUE){\n\t\t\t\t\trc = queue_apply(st, txn, &queue_cur, "
         "false, k.mv_data, klen, 0, ref, &added);",
         "\t\t\t\tif(p[1] == DB_QUEUE){\n\t\t\t\t\t(void)queue_cur;"),
        ("plugin/store_commit.c", "static int queue_apply(", "__attribute__((unused)) static int queue_apply("),
    ],
    "no-queue": [
        ("plugin/store_buffer.c",) + queue_entry_return(
            "int store_queue_append(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q)"),
        ("plugin/store_buffer.c",) + queue_entry_return(
            "int store_queue_update(struct store *st, const char *clientid, uint64_t cmsg_id, const struct rec_queue *q)"),
        ("plugin/store_buffer.c",) + queue_entry_return(
            "int store_queue_remove(struct store *st, const char *clientid, uint64_t cmsg_id, uint64_t store_id)"),
    ],
    "no-journal": [
        ("plugin/plugin.c",) + NOOP,
        ("plugin/plugin.c", REGISTER, "persist_events[i].event, persist_events[i].event == MOSQ_EVT_MESSAGE_IN "
         "? noop_cb : persist_events[i].cb,"),
    ],
    "no-op": [
        ("plugin/plugin.c",) + NOOP,
        ("plugin/plugin.c", REGISTER, "persist_events[i].event, persist_events[i].event == MOSQ_EVT_PERSIST_RESTORE "
         "? persist_events[i].cb : noop_cb,"),
    ],
}
METRIC = {"A": "publish_rate", "E": "deliver_rate"}


def build(name, patches, top):
    src = os.path.join(top, name, "src")
    shutil.rmtree(os.path.join(top, name), ignore_errors=True)
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns(".git", "build*", "run", "__pycache__"))
    for path, old, new in patches:
        f = os.path.join(src, path)
        with open(f) as fh:
            text = fh.read()
        if text.count(old) != 1:
            sys.exit(f"ceilings: variant {name} no longer applies to {path} (the source changed): {old!r}")
        with open(f, "w") as fh:
            fh.write(text.replace(old, new))
    b = os.path.join(top, name, "b")
    for cmd in (["cmake", "-S", src, "-B", b, "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DPERSIST_LMDB_TESTS=OFF"],
                ["cmake", "--build", b, "-j", str(os.cpu_count() or 1), "--target", "mosquitto_persist_lmdb"]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            sys.exit(f"ceilings: building {name} failed:\n{r.stdout[-3000:]}")
    return os.path.join(b, "mosquitto_persist_lmdb.so")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--scenarios", default="A,E")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of bench/run.py per variant and rep (default 2)")
    ap.add_argument("--reps", type=int, default=2, help="times the variants are cycled through (default 2)")
    args = ap.parse_args()
    names = args.variants.split(",")
    for n in names:
        if n not in VARIANTS:
            sys.exit(f"ceilings: unknown variant {n} (known: {', '.join(VARIANTS)})")
    scenarios = args.scenarios.split(",")
    top = os.path.join(SRC, "build-bench", "ceilings")
    plugins = {n: build(n, VARIANTS[n], top) for n in names}
    results = os.path.join(SRC, "build-bench", "data", "results.json")
    rates = {(n, s, setup): [] for n in names for s in scenarios for setup in ("none", "lmdb")}
    for rep in range(args.reps):
        for n in names:
            r = subprocess.run([os.path.join(SRC, "bench", "run.sh"), "--no-build", "--lmdb-plugin", plugins[n],
                                "--setups", "none,lmdb", "--scenarios", ",".join(scenarios), "--rounds",
                                str(args.rounds), "--no-drain", "--no-write"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode:
                sys.exit(f"ceilings: bench/run.py failed for {n}:\n{r.stderr[-3000:]}")
            with open(results) as fh:
                res = json.load(fh)["results"]
            for s in scenarios:
                for setup in ("none", "lmdb"):
                    rates[(n, s, setup)] += [x[METRIC[s]] for x in res[s][setup] if x.get(METRIC[s])]
            print(f"rep {rep + 1}: {n} done", file=sys.stderr, flush=True)
    print("| variant | " + " | ".join(f"{s}: lmdb / none ({METRIC[s]}, msg/s)" for s in scenarios) + " |")
    print("|---|" + "---|" * len(scenarios))
    for n in names:
        cells = []
        for s in scenarios:
            lm = statistics.median(rates[(n, s, "lmdb")])
            no = statistics.median(rates[(n, s, "none")])
            cells.append(f"{lm / no:.2f} ({lm:,.0f} / {no:,.0f})")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
