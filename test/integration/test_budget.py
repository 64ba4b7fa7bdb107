"""plugin_opt_max_db_size: a budget for the store's pages in use.

At the budget, QoS 1/2 publishes whose topic an offline session subscribes
to are refused (MQTT 5: PUBACK 0x97; MQTT 3.1.1: disconnected, unacknowledged);
publishes for connected subscribers still flow; nothing stored is lost; when
the offline queue drains, publishes are accepted again without a restart.
"""

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import (CONTROL_USER, HOST, QUOTA_EXCEEDED, V311, V5, Acks, Client, assert_plugin_said, assert_sequence,
                     assert_v311_publish_refused, control_stats, numbered_payload, seqs_of,
                     small_filesystem)

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
    # store measures itself every 100 ms, and the payloads let in meanwhile count
    # until the next measurement.
    assert 200 < len(accepted) < 2500, len(accepted)
    assert_plugin_said(broker.log(), "at plugin_opt_max_db_size")
    # The pages in use count what is committed: under load (the sanitizer
    # build beside the plain one) the last commits may still be running.
    deadline = time.monotonic() + 10
    while (stats := control_stats(broker))["usedBytes"] < 1 << 19 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stats["refusedOverBudget"] >= 1 and stats["usedBytes"] >= 1 << 19, stats
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


# --------------------------------------------------------------------------
# Everything that grows the store (issue 20): retained messages, sessions,
# subscriptions; on a real small file system
# --------------------------------------------------------------------------

SERVER_BUSY = 0x89
RETAINED = 500_000   # the reproduction: 60 retained messages of 500 kB, a 4 MiB budget



def _connack(broker, cid, version=V5, clean=False, expiry=3600, username=None) -> int:
    """The CONNACK reason code a client gets (paho directly: the harness's
    Client asserts success)."""
    got, ev = {}, threading.Event()
    kw = {} if version == V5 else {"clean_session": clean}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version, **kw)

    def on_connect(client, userdata, flags, rc, props):
        got["rc"] = rc.value if hasattr(rc, "value") else rc
        ev.set()

    c.on_connect = on_connect
    if username:
        c.username_pw_set(username)
    ckw = {}
    if version == V5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = expiry
        ckw = {"clean_start": clean, "properties": props}
    c.connect(HOST, broker.port, 60, **ckw)
    c.loop_start()
    try:
        assert ev.wait(10), f"{cid}: no CONNACK"
    finally:
        c.disconnect()
        c.loop_stop()
    return got["rc"]


def _subscribe_refused(client, topic) -> bool:
    """Whether SUBSCRIBE topic cost the client its connection, without a SUBACK."""
    rc, mid = client.mqtt.subscribe(topic, 1)
    # paho reports NO_CONN when the broker closes the connection while it
    # writes the SUBSCRIBE: the broker's log says whether it got it.
    assert rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), rc
    client._wait(lambda: mid in client._subacks or client.disconnected, 10, f"SUBACK for {topic}")
    return client.disconnected and mid not in client._subacks


def test_budget_bounds_retained_sessions_and_subscriptions(broker, workdir):
    """The reproduction of issue 20 on a 24 MiB tmpfs: with a 4 MiB budget,
    60 retained messages of 500 kB grew data.mdb to 33 MiB. Now retained
    messages that set a topic are refused at the budget (PUBACK 0x97; a QoS 0
    one is dropped), a connection that would start a stored session gets
    CONNACK 0x89 Server busy, a stored session's new subscription costs the
    client its connection (no SUBACK: see budget.c); clearing a retained message, clean MQTT 3.1.1 clients and stored
    sessions' reconnections still work; each refusal is counted. Clearing
    the retained messages brings the store under the budget and everything
    is accepted again."""
    with small_filesystem(broker, workdir, "24m") as mnt:
        broker.plugin_opts["db_path"] = str(mnt / "db")
        broker.plugin_opts["max_db_size"] = "4M"
        broker.plugin_opts["journal_size"] = "4M"
        broker.start()
        keeper = Client(broker, "keeper", version=V5, persistent=True, session_expiry=3600)
        keeper.subscribe("keep/#", 1)

        pub = Acks(Client(broker, "ret-pub", version=V5))
        codes = [pub.send(f"ret/{i}", bytes([i]) * RETAINED, retain=True) for i in range(60)]
        accepted = [i for i, c in enumerate(codes) if c < 0x80]
        assert all(c < 0x80 or c == QUOTA_EXCEEDED for c in codes), codes
        assert 0 < len(accepted) < 20 and codes[-1] == QUOTA_EXCEEDED, codes
        size = (mnt / "db" / "data.mdb").stat().st_size
        assert size < 16 << 20, f"data.mdb grew to {size >> 20} MiB"
        pub.c.publish("ret/q0", b"x" * 1000, qos=0, retain=True)

        assert _connack(broker, "newcomer") == SERVER_BUSY
        assert _connack(broker, "newcomer-clean-v5", clean=True, expiry=0) == SERVER_BUSY
        assert _connack(broker, "newcomer-v3", version=V311) in (5, 0x87)  # not authorised
        assert _connack(broker, "clean-v3", version=V311, clean=True) == 0
        assert _connack(broker, "operator-console", clean=True, expiry=0, username=CONTROL_USER) == 0
        assert _subscribe_refused(keeper, "keep2/#")
        log = broker.log()
        assert "Received SUBSCRIBE from keeper" in log and f"Client keeper [{HOST}" in log, log[-2000:]
        assert "disconnected: quota exceeded" in log, log[-2000:]
        assert _connack(broker, "keeper", expiry=3600) == 0  # a stored session comes back
        stats = control_stats(broker)
        assert stats["refusedRetainedOverBudget"] >= 60 - len(accepted), stats
        assert stats["refusedSessionsOverBudget"] >= 3 and stats["refusedSubscriptionsOverBudget"] >= 1, stats
        assert_plugin_said(broker.log(), "retained messages, new stored sessions")

        # Nothing refused was stored: the retained messages are those accepted.
        with Client(broker, "reader", version=V311) as r:
            r.subscribe("ret/#", 1)
            got = sorted(int(m.topic.split("/")[1]) for m in r.listen(1.5) if m.topic != "ret/q0")
            assert got == accepted, got
            assert not [m for m in r.messages() if m.topic == "ret/q0"], "a QoS 0 retained message was stored"

        # Clearing is never refused; below the budget everything is accepted again.
        for i in accepted:
            assert pub.send(f"ret/{i}", b"", retain=True) < 0x80
        deadline = time.monotonic() + 15
        while _connack(broker, "newcomer") == SERVER_BUSY:
            assert time.monotonic() < deadline, "new sessions still refused after the store drained"
            time.sleep(0.3)
        assert_plugin_said(broker.log(), "back under plugin_opt_max_db_size")
        assert pub.send("ret/after", b"small", retain=True) < 0x80
        # The refused subscription was not stored.
        assert pub.send("keep2/x", b"2") < 0x80 and pub.send("keep/x", b"1") < 0x80
        with Client(broker, "keeper", version=V5, persistent=True, session_expiry=3600) as k:
            assert [m.topic for m in k.listen(1.5)] == ["keep/x"]
        pub.c.disconnect()
