"""Idempotent publishes: a message id in an MQTT 5 user property
(plugin_opt_dedup_property, default msg-id) routes a message once per
identity (username, else client id) within plugin_opt_dedup_window.

A duplicate is acknowledged as usual and routed to nobody: a QoS 1 publisher
gets PUBACK with reason 0x10 (No matching subscribers), a QoS 2 publisher
completes its exchange.
"""

import json
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import Acks
from rawmqtt import PUBREL, RawClient, user_property

TOPIC = "dedup/t"


def _props(msg_id=None, name="msg-id"):
    p = Properties(PacketTypes.PUBLISH)
    if msg_id is not None:
        p.UserProperty = (name, msg_id)
    return p


class Publisher(Acks):
    """Publishes with a message id property, records each reason code."""

    def send(self, payload, msg_id, qos=1, name="msg-id", topic=TOPIC) -> int:
        return super().send(topic, payload, qos, _props(msg_id, name))


def _payloads(sub, seconds=0.6):
    return [m.payload for m in sub.listen(seconds)]


def test_same_id_routed_once(broker, clients):
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"one", "id-1") == 0
    assert pub.send(b"one again", "id-1") == 0x10  # acknowledged, routed to nobody
    assert pub.send(b"two", "id-2") == 0
    assert pub.send(b"no id", None) == 0
    assert pub.send(b"other property", "id-1", name="other") == 0
    got = _payloads(sub)
    assert got == [b"one", b"two", b"no id", b"other property"], got


def test_identity_is_username_else_client_id(broker, clients):
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    alice1 = Publisher(clients("dd-a1", username="alice"))
    alice2 = Publisher(clients("dd-a2", username="alice"))
    bob = Publisher(clients("dd-b", username="bob"))
    anon1 = Publisher(clients("dd-n1"))
    anon2 = Publisher(clients("dd-n2"))
    assert alice1.send(b"a", "x") == 0
    assert alice2.send(b"a again, other device", "x") == 0x10
    assert bob.send(b"b", "x") == 0
    assert anon1.send(b"n1", "x") == 0
    assert anon2.send(b"n2", "x") == 0
    assert anon1.send(b"n1 again", "x") == 0x10
    assert _payloads(sub) == [b"a", b"b", b"n1", b"n2"]


def test_duplicate_is_not_retained(broker, clients):
    broker.start()
    pub = Publisher(clients("dd-pub"))
    for payload in (b"first", b"second, same id"):
        info = pub.c.mqtt.publish("dedup/r", payload, qos=1, retain=True, properties=_props("r1"))
        info.wait_for_publish(5)
        assert info.is_published()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    assert _payloads(sub) == [b"first"]


def test_ids_survive_restart_and_kill(broker, clients):
    broker.start()
    sub = clients("dd-sub", persistent=True, session_expiry=3600)
    sub.subscribe("dedup/#", 1)
    sub.disconnect()
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"m1", "k1") == 0
    pub.c.disconnect()
    broker.restart()
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"m1 after restart", "k1") == 0x10
    # Acknowledged just before a kill -9: the id lives in the journal only.
    assert pub.send(b"m2", "k2") == 0
    broker.kill()
    broker.start()
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"m2 after kill", "k2") == 0x10
    assert pub.send(b"m3", "k3") == 0
    sub = clients("dd-sub", persistent=True, session_expiry=3600)
    assert _payloads(sub) == [b"m1", b"m2", b"m3"]


def test_window_ends(broker, clients):
    broker.plugin_opts["dedup_window"] = "1s"
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"w1", "w") == 0
    assert pub.send(b"w1 again", "w") == 0x10
    time.sleep(2.2)
    assert pub.send(b"w1 after the window", "w") == 0
    assert _payloads(sub) == [b"w1", b"w1 after the window"]


def test_index_is_bounded(broker, clients):
    broker.plugin_opts["dedup_max_ids"] = "2"
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    pub = Publisher(clients("dd-pub"))
    for i in ("a", "b", "c"):
        assert pub.send(i.encode(), i) == 0
    assert pub.send(b"c again", "c") == 0x10
    assert pub.send(b"a again, forgotten", "a") == 0
    assert _payloads(sub) == [b"a", b"b", b"c", b"a again, forgotten"]
    stats = _stats(clients)
    assert stats["dedupIds"] == 2 and stats["dedupIdsEvicted"] == 2 and stats["duplicatesDropped"] == 1, stats


def test_off_with_window_zero(broker, clients):
    broker.plugin_opts["dedup_window"] = "0"
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    pub = Publisher(clients("dd-pub"))
    assert pub.send(b"1", "same") == 0
    assert pub.send(b"2", "same") == 0
    assert _payloads(sub) == [b"1", b"2"]


def _stats(clients):
    admin = clients("dd-admin", username="admin")
    admin.subscribe("$CONTROL/persist-lmdb/v1/response", 1)
    admin.publish("$CONTROL/persist-lmdb/v1", json.dumps({"commands": [{"command": "getStats"}]}))
    msg = admin.wait_for(1)[-1]
    return json.loads(msg.payload)["responses"][0]["data"]


def _release(raw, mid):
    raw.ack(PUBREL, mid)
    kind, _, data = raw.read()
    assert kind == 7 and int.from_bytes(data[:2], "big") == mid, (kind, data)


def test_qos1_resend_with_dup_after_reconnect(broker, clients):
    """The PUBACK was lost with the connection: the client resends, DUP set."""
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 1)
    raw = RawClient(broker.port, "dd-raw", version=5)
    assert raw.publish(TOPIC, 1, b"q1", 1, user_property("msg-id", "r-1")) == 0
    raw.close()
    raw = RawClient(broker.port, "dd-raw", version=5)
    assert raw.publish(TOPIC, 1, b"q1", 1, user_property("msg-id", "r-1"), dup=True) == 0x10
    raw.close()
    assert _payloads(sub) == [b"q1"]


def test_qos2_resend_of_exchange_in_progress_is_not_dropped(broker, clients):
    """PUBREC was lost: the resent PUBLISH (same packet id, same message id)
    belongs to the exchange in progress, which must complete and deliver."""
    broker.start()
    sub = clients("dd-sub")
    sub.subscribe("dedup/#", 2)
    msg_id = user_property("msg-id", "r-2")
    raw = RawClient(broker.port, "dd-raw2", version=5)
    assert raw.publish(TOPIC, 7, b"q2", 2, msg_id) == 0
    raw.close()
    raw = RawClient(broker.port, "dd-raw2", version=5)
    assert raw.publish(TOPIC, 7, b"q2", 2, msg_id, dup=True) == 0
    _release(raw, 7)
    # The exchange is over: a new exchange with the same message id is a duplicate.
    assert raw.publish(TOPIC, 8, b"q2 again", 2, msg_id) == 0
    _release(raw, 8)
    raw.close()
    assert _payloads(sub) == [b"q2"]
