#!/usr/bin/env python3
"""Checks that the plugin's files include one another one way, down the
layers of docs/architecture.md: a file includes headers of its own layer or
below, and only the broker-facing layers include Mosquitto's headers.
Prints each include that breaks the rule; exits 1 if there is one.
Usage: check_layers.py SOURCE_DIR"""
import re
import sys
from pathlib import Path

# Bottom to top. A file not named here is engine code (plugin/*.c,
# include/*.h): it is checked to include nothing above the engine.
LAYERS = [
    ("engine", []),
    ("gateway", ["plugin/broker.h", "plugin/broker_int.h", "plugin/broker.c", "plugin/props.c"]),
    ("state", ["plugin/state.h"]),
    ("features", ["plugin/feature.h", "plugin/intake.c", "plugin/mark.c", "plugin/msgid.c",
                  "plugin/budget.c", "plugin/retention.c", "plugin/backlog.c", "plugin/handback.c",
                  "plugin/bodies.c", "plugin/seqno.c", "plugin/wills.c", "plugin/clients.c"]),
    ("dispatch", ["plugin/dispatch.h", "plugin/features.c"]),
    ("broker-facing", ["plugin/adapter.h", "plugin/events.c", "plugin/restore.c", "plugin/control.c",
                       "plugin/metrics.c"]),
    ("entry", ["plugin/plugin.c"]),
]
# Layers that may include Mosquitto's own headers.
BROKER_AWARE = {"gateway", "broker-facing", "entry"}

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]', re.M)


def main() -> int:
    root = Path(sys.argv[1])
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    layer_of = {path: name for name, paths in LAYERS for path in paths}
    files = sorted(p.relative_to(root).as_posix() for p in
                   list((root / "plugin").glob("*.[ch]")) + list((root / "include").glob("*.h")))
    by_name = {}
    for f in files:
        by_name.setdefault(Path(f).name, f)
    bad = []
    for f in files:
        mine = layer_of.get(f, "engine")
        for kind, inc in INCLUDE.findall((root / f).read_text()):
            if kind == "<":
                if inc.startswith("mosquitto") or inc.startswith("mqtt_protocol"):
                    if mine not in BROKER_AWARE:
                        bad.append(f"{f}: includes <{inc}>, but the {mine} layer knows no broker")
                continue
            target = by_name.get(Path(inc).name)
            if target is None:
                continue
            theirs = layer_of.get(target, "engine")
            if rank[theirs] > rank[mine]:
                bad.append(f"{f} ({mine}) includes {target} ({theirs}), a layer above it")
    for line in bad:
        print(line)
    print(f"{len(files)} files checked, {len(bad)} includes against the layers")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
