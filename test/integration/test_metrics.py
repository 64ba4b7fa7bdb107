"""$SYS metrics: published retained under $SYS/broker/persist-lmdb/ every
plugin_opt_metrics_interval seconds, with values that follow the store."""

import time

from harness import V5, Client

PREFIX = "$SYS/broker/persist-lmdb/"


def _metrics(broker, wait=3.5):
    """The latest value of every metric, as ints, after wait seconds."""
    with Client(broker, "metrics-reader") as c:
        c.subscribe(PREFIX + "#", 0)
        time.sleep(wait)
        return {m.topic[len(PREFIX):]: int(m.payload) for m in c.messages()}


def test_metrics_follow_the_store(broker):
    broker.plugin_opts["metrics_interval"] = "1"
    broker.start()
    with Client(broker, "m-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("m/#", 1)
    with Client(broker, "m-pub") as p:
        p.publish_numbered("m/t", range(1, 8))
    broker.settle()
    m = _metrics(broker)
    for name in ("sessions/total", "sessions/online", "sessions/offline", "clients/connected", "queue/messages", "queue/bytes",
                 "messages/bodies", "database/bytes", "database/map-bytes", "database/map-use-percent",
                 "commits/total", "commits/errors", "commits/latency-p50-us", "commits/latency-p99-us",
                 "records/rejected", "journal/bytes", "journal/used-bytes", "dedup/ids",
                 "dropped/duplicates", "refused/disk-full", "refused/over-budget", "database/used-bytes"):
        assert name in m, f"{name} not published: {sorted(m)}"
    # The reader is connected without a stored session.
    assert m["sessions/total"] == 1 and m["sessions/online"] == 0 and m["sessions/offline"] == 1, m
    assert m["clients/connected"] == 1, m
    assert m["queue/messages"] == 7 and m["messages/bodies"] == 7, m
    assert m["commits/total"] > 0 and m["commits/errors"] == 0 and m["records/rejected"] == 0, m
    assert 0 < m["database/bytes"] <= m["database/map-bytes"], m
    assert 0 < m["database/used-bytes"] <= m["database/bytes"], m
    assert m["refused/over-budget"] == 0, m

    # Drained: the queue metric follows.
    with Client(broker, "m-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.collect(7)
    broker.settle()
    assert _metrics(broker)["queue/messages"] == 0


def test_metrics_off(broker):
    broker.plugin_opts["metrics_interval"] = "0"
    broker.start()
    assert _metrics(broker, wait=2.5) == {}
