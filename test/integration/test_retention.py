"""Retention of offline sessions' queues: plugin_opt_max_queued_messages and
plugin_opt_max_queued_bytes with plugin_opt_queue_full drop-new / drop-oldest,
plugin_opt_offline_ttl and MQTT 5 message expiry, across restarts.

Limits and expiry act on sessions whose client is not connected; drops are
counted (control API, metrics) and logged with a rate-limited warning. Every
test runs with plugin_opt_queue_storage memory and disk.
"""

import json
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import CONTROL_USER, V5, Client, assert_plugin_said, control_stats, numbered_payload, run_cli, seqs_of


@pytest.fixture(autouse=True, params=["memory", "disk"])
def queue_storage(request, broker):
    """Each test in both modes: with disk, offline queues are in the
    database only and the limits and expiry remove entries from it."""
    broker.plugin_opts["queue_storage"] = request.param
    return request.param


def _wait_stats(broker, pred, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        s = control_stats(broker)
        if pred(s):
            return s
        assert time.monotonic() < deadline, f"{what}: {s}"
        time.sleep(0.2)


def _offline_sub(broker, cid="ret-sub"):
    with Client(broker, cid, version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("ret/#", 1)


def _drain(broker, cid="ret-sub", expect=None):
    """Reconnects the session and returns the numbers it is sent."""
    with Client(broker, cid, version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        if expect:
            c.collect(expect, timeout=20)
        return seqs_of(c.listen(1.0))


def _publish(broker, seqs, size=0, props=None):
    with Client(broker, "ret-pub", version=V5) as p:
        for n in seqs:
            p.publish("ret/t", numbered_payload(n, size), qos=1, properties=props)


@pytest.mark.parametrize("policy,kept", [("drop-new", range(1, 6)), ("drop-oldest", range(8, 13))])
def test_max_queued_messages(broker, policy, kept):
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.plugin_opts["queue_full"] = policy
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 13))
    s = _wait_stats(broker, lambda s: s["droppedQueueFull"] == 7 and s["queuedMessages"] == 5,
                    "7 dropped, 5 kept")
    assert s["droppedExpired"] == 0, s
    assert_plugin_said(broker.log(), "new messages (queue full)" if policy == "drop-new"
                       else "oldest messages (queue full)")
    # What was dropped is gone from the database too.
    broker.restart("kill")
    assert _drain(broker, expect=5) == list(kept)


def test_max_queued_bytes(broker):
    broker.plugin_opts["max_queued_bytes"] = "1000"
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 21), size=100)
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 10, "10 of 100 bytes over 1000")
    assert _drain(broker, expect=10) == list(range(1, 11))


def test_limits_leave_connected_clients_alone(broker):
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.start()
    with Client(broker, "ret-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("ret/#", 1)
        _publish(broker, range(1, 201))
        assert seqs_of(c.collect(200)) == list(range(1, 201))
    assert control_stats(broker)["droppedQueueFull"] == 0


def test_drop_oldest_after_a_restart(broker):
    """A queue restored over the limit (a smaller limit, or drops not yet
    committed at a crash) is trimmed at the first tick."""
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 21))
    broker.stop()
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.plugin_opts["queue_full"] = "drop-oldest"
    broker.start()
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 15, "15 dropped after the restore")
    assert _drain(broker, expect=5) == list(range(16, 21))


COUNTING = "counting the stored queues for the queue limits and expiry once"


def test_limits_kept_on_disk_across_restarts(broker, queue_storage):
    """Disk mode keeps each session's tally (count, bytes, earliest expiry)
    in the database, in the commit that changes the queue: a restart,
    clean or kill -9, reads the tallies instead of every queue, and the
    limit holds exactly. A run that did not keep them (here one without
    limits) makes the next start count every stored queue once."""
    if queue_storage == "memory":
        pytest.skip("memory mode keeps no tallies: the broker restores every queue")
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.plugin_opts["queue_full"] = "drop-oldest"
    broker.start()
    _offline_sub(broker)
    broker.settle()
    _publish(broker, range(1, 9))
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 3, "3 dropped")
    broker.restart("term")
    _publish(broker, range(9, 11))
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 2, "2 dropped after a clean restart")
    broker.settle()
    _publish(broker, range(11, 13))
    broker.kill()
    # What the kill left: each stored tally matches its stored queue.
    assert _verified_tallies(broker) == 1
    broker.start()
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 2, "2 dropped after kill -9")
    time.sleep(1.5)
    assert control_stats(broker)["droppedQueueFull"] == 2
    assert _drain(broker, expect=5) == list(range(8, 13))
    for run in (1, 2, 3):
        assert COUNTING not in broker.log(run), run

    del broker.plugin_opts["max_queued_messages"]
    broker.restart("term")
    _publish(broker, range(13, 20))
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.restart("term")
    assert COUNTING in broker.log(), broker.plugin_lines()
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 2, "2 dropped after counting")
    broker.restart("term")
    assert COUNTING not in broker.log()
    assert _drain(broker, expect=5) == list(range(15, 20))
    broker.stop()
    assert _verified_tallies(broker) == 0


def _verified_tallies(broker):
    """persist-lmdb verify: no problem, the stored tallies checked; how many."""
    r = run_cli(broker, "verify")
    assert r.returncode == 0 and "verify: no problems found" in r.stdout, r.stdout + r.stderr
    lines = dict(l.rsplit(None, 1) for l in r.stdout.splitlines() if "queue tallies" in l and l[-1].isdigit())
    assert lines.get("wrong queue tallies") == "0", r.stdout
    return int(lines["queue tallies checked"])


class _AcksFirst(Client):
    """Acknowledges the first n messages it receives, and no more."""

    def __init__(self, broker, client_id, n, **kw):
        self.to_ack = n
        super().__init__(broker, client_id, **kw)

    def _deliver(self, client, userdata, msg):
        if msg.qos > 0 and self.to_ack > 0:
            self.to_ack -= 1
            client.ack(msg.mid, msg.qos)
        self._on_message(client, userdata, msg)


def test_limit_after_leaving_in_the_middle_of_the_queue(broker, queue_storage):
    """A client acknowledges 10 messages of its queue and leaves; what it
    left (in flight included) and what arrives after are trimmed to the
    newest, and its next connection gets exactly those. In disk mode the
    queue goes back 64 at a time, so the client leaves in the middle of
    handing it back."""
    if queue_storage == "disk":
        broker.plugin_opts["queue_window"] = "64"
        # Below the window (parts grow past a larger in-flight window).
        broker.max_inflight = 20
    broker.plugin_opts["max_queued_messages"] = "100"
    broker.plugin_opts["queue_full"] = "drop-oldest"
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 301))
    _wait_stats(broker, lambda s: s["droppedQueueFull"] == 200 and s["queuedMessages"] == 100, "trimmed to 100")
    with _AcksFirst(broker, "ret-sub", 10, version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        got = seqs_of(c.collect(10, timeout=20))
        assert len(got) >= 10 and got == list(range(201, 201 + len(got))), got
        if queue_storage == "disk":
            # 10 acknowledged of a first part of 64: the next is not handed over.
            assert len(got) <= 64, got
    # 290 stored (in flight included): the newest 100 stay.
    _publish(broker, range(301, 501))
    _wait_stats(broker, lambda s: s["queuedMessages"] == 100, "trimmed to 100 again")
    assert _drain(broker, expect=100) == list(range(401, 501))


def test_offline_ttl_sweeps_and_never_delivers(broker):
    broker.plugin_opts["offline_ttl"] = "2s"
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 6))
    # The sweep reclaims them with nobody connecting.
    s = _wait_stats(broker, lambda s: s["droppedExpired"] == 5 and s["queuedMessages"] == 0, "swept", 15)
    assert s["messageBodies"] == 0, s
    assert_plugin_said(broker.log(), "expired messages queued for offline client ret-sub")
    _publish(broker, range(6, 9))
    assert _drain(broker, expect=3) == [6, 7, 8]


def test_offline_ttl_sweeps_after_a_restart(broker, queue_storage):
    """Messages that expire after a kill -9 and restart are removed with
    nobody connecting. In memory mode the restored broker holds them and
    removes some itself (not counted here); in disk mode the queue is read
    back from the database at the restart, expiry from the bodies, and the
    sweep removes each one."""
    broker.plugin_opts["offline_ttl"] = "3s"
    broker.start()
    _offline_sub(broker)
    # A session is durable at its commit, not journaled (durability.md, known limits); the
    # messages after it are, and come back from the journal.
    broker.settle()
    _publish(broker, range(1, 6))
    broker.restart("kill")
    s = control_stats(broker)
    assert s["queuedMessages"] == 5 and s["droppedExpired"] == 0, s
    s = _wait_stats(broker, lambda s: s["queuedMessages"] == 0 and s["messageBodies"] == 0, "swept", 15)
    if queue_storage == "disk":
        assert s["droppedExpired"] == 5, s
    else:
        assert s["droppedExpired"] <= 5, s
    _publish(broker, [6])
    assert _drain(broker, expect=1) == [6]


def test_offline_ttl_at_reconnect(broker):
    """A client coming back right after its messages expired is not sent
    them, also before the sweep found them (the session is swept at its
    authentication); one coming back before the expiry gets them."""
    broker.plugin_opts["offline_ttl"] = "1s"
    broker.start()
    _offline_sub(broker)
    for attempt in range(5):
        _publish(broker, [attempt * 10 + 1])
        time.sleep(2.05)  # expiry is in whole seconds: past 1 s for sure
        got = _drain(broker)
        assert got == [], f"an expired message was delivered: {got}"
    _publish(broker, [100])
    assert _drain(broker, expect=1) == [100]


def test_offline_ttl_across_restart(broker):
    broker.plugin_opts["offline_ttl"] = "2s"
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 4))
    broker.stop()
    time.sleep(3.5)
    broker.start()
    assert _drain(broker) == []


def test_mqtt5_expiry_across_restart(broker):
    broker.start()
    _offline_sub(broker)
    short = Properties(PacketTypes.PUBLISH)
    short.MessageExpiryInterval = 2
    _publish(broker, [1], props=short)
    _publish(broker, [2])
    broker.stop()
    time.sleep(3.5)
    broker.start()
    assert _drain(broker, expect=1) == [2]


def test_expiry_past_the_packet_id_span(broker, queue_storage):
    """A queue longer than a client's 65,535 packet ids: the broker's delete
    by id finds the oldest message with an id, so expired messages go oldest
    first and every one of them goes."""
    if queue_storage == "disk":
        pytest.skip("disk mode removes stored entries by sequence number, not through the broker's delete by id")
    broker.plugin_opts["offline_ttl"] = "2s"
    broker.start()
    _offline_sub(broker)
    n = 66000
    with Client(broker, "ret-pub", version=V5) as p:
        for first in range(1, n + 1, 10000):  # paho holds at most 65,535 unacknowledged
            p.publish_many([("ret/t", numbered_payload(i, 0), 1) for i in range(first, min(n, first + 9999) + 1)])
    s = _wait_stats(broker, lambda s: s["droppedExpired"] == n and s["queuedMessages"] == 0, "all swept", 60)
    assert s["messageBodies"] == 0, s
    _publish(broker, [n + 1])
    assert _drain(broker, expect=1) == [n + 1]


def test_deleted_account_leaves_no_limits_behind(broker):
    """deleteAccount removes the session from the broker, which reports no
    deletion: the limits must forget the old queue too. Kept, its entries
    counted against the new session of the same client id, and dropping
    them by packet id dropped the new session's messages."""
    broker.plugin_opts["max_queued_messages"] = "5"
    broker.start()
    _offline_sub(broker)
    _publish(broker, range(1, 6))
    with Client(broker, "ret-admin", version=V5, username=CONTROL_USER) as a:
        a.subscribe("$CONTROL/persist-lmdb/v1/response", 1)
        a.publish("$CONTROL/persist-lmdb/v1",
                  json.dumps({"commands": [{"command": "deleteAccount", "clientid": "ret-sub"}]}), qos=1)
        [resp] = json.loads(a.wait_for(1)[0].payload)["responses"]
    assert resp["data"]["sessions"] == 1, resp
    _offline_sub(broker)
    _publish(broker, range(6, 11))
    time.sleep(1.5)  # the limits run at the tick
    assert control_stats(broker)["droppedQueueFull"] == 0
    assert _drain(broker, expect=5) == list(range(6, 11))
