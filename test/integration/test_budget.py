"""plugin_opt_max_db_size: a budget for the store's pages in use.

At the budget, QoS 1/2 publishes whose topic an offline session subscribes
to are refused (MQTT 5: PUBACK 0x97; MQTT 3.1.1: disconnected, unacknowledged);
publishes for connected subscribers still flow; nothing stored is lost; when
the offline queue drains, publishes are accepted again without a restart.
"""

import time

import pytest

from harness import (QUOTA_EXCEEDED, V5, Acks, Client, assert_plugin_said, assert_sequence,
                     assert_v311_publish_refused, control_stats, numbered_payload, seqs_of)

SIZE = 1000


def _fill_until_refused(pub, limit=5000):
    accepted = []
    for seq in range(1, limit):
        code = pub.send("bud/t", numbered_payload(seq, SIZE))
        if code == QUOTA_EXCEEDED:
            return accepted
        assert code < 0x80, f"unexpected reason code {code:#x}"
        accepted.append(seq)
    raise AssertionError(f"no publish was refused after {limit} messages of {SIZE} bytes")


@pytest.mark.parametrize("queue_storage", ["memory", "disk"])
def test_budget_refuses_offline_messages_then_recovers(broker, queue_storage):
    broker.plugin_opts["queue_storage"] = queue_storage
    broker.plugin_opts["max_db_size"] = "1M"
    broker.start()
    with Client(broker, "bud-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("bud/#", 1)
    online = Client(broker, "bud-online", version=V5)
    online.subscribe("live/#", 1)
    pub = Acks(Client(broker, "bud-pub", version=V5))

    accepted = _fill_until_refused(pub)
    # 1 MiB of pages holds a few hundred 1 kB messages with their queue entries; the
    # budget is measured every 100 ms, so what arrives in that time overruns it.
    assert 200 < len(accepted) < 2500, len(accepted)
    assert_plugin_said(broker.log(), "at plugin_opt_max_db_size")
    stats = control_stats(broker)
    assert stats["refusedOverBudget"] >= 1 and stats["usedBytes"] >= 1 << 20, stats
    assert stats["maxDbSize"] == 1 << 20, stats

    # Only offline sessions' messages are refused: a connected subscriber's still flow.
    assert pub.send("live/x", b"for the connected one") < 0x80
    assert [m.payload for m in online.collect(1)] == [b"for the connected one"]
    assert_v311_publish_refused(broker, "bud-v3", "bud/t")

    # The offline session drains: its pages are freed and publishes are accepted again.
    with Client(broker, "bud-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert_sequence(seqs_of(c.collect(len(accepted), timeout=30)), accepted, "queue filled to the budget")
    last = accepted[-1] + 1
    deadline = time.monotonic() + 15
    while (code := pub.send("bud/t", numbered_payload(last, SIZE))) == QUOTA_EXCEEDED:
        assert time.monotonic() < deadline, "publishes still refused after the queue drained"
        time.sleep(0.2)
    assert code < 0x80, f"unexpected reason code {code:#x}"
    assert_plugin_said(broker.log(), "back under plugin_opt_max_db_size")
    pub.c.disconnect()
    online.disconnect()

    # Nothing refused was stored, nothing accepted was lost.
    broker.restart("kill")
    with Client(broker, "bud-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert seqs_of(c.collect(1, timeout=20)) == [last]


def test_no_budget_by_default(broker):
    broker.start()
    stats = control_stats(broker)
    assert stats["maxDbSize"] == 0 and stats["refusedOverBudget"] == 0, stats
    assert stats["usedBytes"] > 0, stats
