"""plugin_opt_queue_storage disk (the default): offline sessions' messages
live in the database only; the broker gets a session's queue back when its
client authenticates, and a restart restores sessions, not backlogs. With
queue_storage memory the broker holds every queue, as its own persistence
does.
"""

import os
import pwd
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import (DYNSEC_PLUGIN, V5, Client, assert_sequence, dynsec, dynsec_config, numbered_payload, parse_seq,
                     plugin_path, sanitizer_env, seqs_of)
from rawmqtt import PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawClient

# ASan's allocator keeps freed memory in quarantine, and valgrind its own:
# the broker's RSS says nothing about what it holds there.
measures_memory = pytest.mark.skipif(
    bool(sanitizer_env(plugin_path())) or os.environ.get("PERSIST_LMDB_VALGRIND") == "1",
    reason="RSS is not the broker's memory under ASan or valgrind")


def _disk(broker):
    broker.plugin_opts["queue_storage"] = "disk"
    # More than twice the harness's max_inflight_messages (1000): routed
    # messages then always queue behind the window.
    broker.plugin_opts["queue_window"] = "2500"
    return broker.start()


def _offline(broker, cid, topic):
    with Client(broker, cid, version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe(topic, 1)


def _publish(broker, topic, seqs, size=0, cid="disk-pub"):
    with Client(broker, cid, version=V5) as p:
        seqs = list(seqs)
        for i in range(0, len(seqs), 5000):
            p.publish_numbered(topic, seqs[i:i + 5000], payload_size=size)


def _until(c, last, timeout=60.0):
    """Everything c receives until message number last arrives."""
    deadline = time.monotonic() + timeout
    while True:
        got = seqs_of(c.messages())
        if got and got[-1] == last:
            return seqs_of(c.listen(0.3))
        assert time.monotonic() < deadline, f"{c.client_id}: {len(got)} messages, not up to {last}"
        time.sleep(0.1)


def _rss_anon_kib(broker) -> int:
    status = Path(f"/proc/{broker.proc.pid}/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+) kB", status).group(1))


def _growth_for_20mb(broker) -> int:
    """KiB of anonymous memory the broker gains while 20,000 messages of
    1,000 bytes are queued for an offline session (after a warm-up)."""
    _offline(broker, "disk-sub", "disk/#")
    _publish(broker, "disk/t", range(1, 101), size=1000)
    time.sleep(0.5)
    before = _rss_anon_kib(broker)
    _publish(broker, "disk/t", range(101, 20101), size=1000)
    time.sleep(0.5)
    return _rss_anon_kib(broker) - before


def _restored_queued(log: str) -> int:
    m = re.findall(r"restored \d+ messages, \d+ retained, \d+ sessions, \d+ subscriptions, (\d+) queued", log)
    assert m, "no restore line in the log"
    return int(m[-1])


@measures_memory
def test_offline_backlog_is_not_in_broker_memory(broker):
    """20 MB queued for an offline session: the broker's own (anonymous)
    memory does not hold it; the client still gets every message, in order."""
    _disk(broker)
    grown = _growth_for_20mb(broker)
    assert grown < 8 * 1024, f"broker memory grew by {grown} KiB for 20 MB queued offline"
    with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(20100, timeout=60)), list(range(1, 20101)))


@measures_memory
def test_memory_mode_holds_the_backlog(broker):
    """The same load with queue_storage memory: the check above can fail."""
    broker.plugin_opts["queue_storage"] = "memory"
    broker.start()
    assert _growth_for_20mb(broker) > 16 * 1024


@pytest.mark.parametrize("before,after", [("memory", "disk"), ("disk", "memory")])
@pytest.mark.parametrize("restart", ["term", "kill"])
def test_queues_kept_when_the_storage_changes(broker, before, after, restart):
    """A database written with one queue storage (memory: the default of
    earlier releases) opens with the other and keeps its queues: a client
    that took its first messages and left, and one that never came, get
    the rest, in order, once each."""
    broker.plugin_opts["queue_storage"] = before
    broker.start()
    _offline(broker, "switch-a", "switch/a")
    _offline(broker, "switch-b", "switch/b")
    _publish(broker, "switch/a", range(1, 401))
    with Client(broker, "switch-a", version=V5, persistent=True, session_expiry=3600) as c:
        assert_sequence(_until(c, 400), list(range(1, 401)), "before the change")
    _publish(broker, "switch/a", range(401, 1001))
    _publish(broker, "switch/b", range(1, 1001))
    broker.settle()
    broker.plugin_opts["queue_storage"] = after
    broker.restart(restart)
    with Client(broker, "switch-a", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(_until(c, 1000), list(range(401, 1001)), "after the change")
    with Client(broker, "switch-b", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(_until(c, 1000), list(range(1, 1001)), "never connected before")


def test_restart_restores_sessions_not_backlogs(broker):
    _disk(broker)
    _offline(broker, "disk-sub", "disk/#")
    _publish(broker, "disk/t", range(1, 3001))
    broker.restart("kill")
    assert _restored_queued(broker.log()) == 0
    with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(3000, timeout=30)), list(range(1, 3001)))
    # Delivered and acknowledged: nothing comes back after another restart.
    broker.restart("kill")
    with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert seqs_of(c.listen(1.0)) == []


def test_live_messages_come_after_the_backlog(broker):
    """A publisher keeps sending while the session reconnects: the client
    sees one increasing sequence, the backlog first, nothing skipped or
    repeated."""
    _disk(broker)
    _offline(broker, "disk-sub", "disk/#")
    _publish(broker, "disk/t", range(1, 10001))
    stop = threading.Event()
    sent = []

    def live():
        with Client(broker, "disk-live", version=V5) as p:
            n = 10001
            while not stop.is_set() or n < 10501:
                p.publish("disk/t", numbered_payload(n), qos=1)
                sent.append(n)
                n += 1

    t = threading.Thread(target=live)
    t.start()
    try:
        time.sleep(0.3)
        with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c:
            c.wait_for(10500, timeout=60)
            stop.set()
            t.join(60)
            got = seqs_of(c.collect(sent[-1], timeout=60))
    finally:
        stop.set()
        t.join(60)
    assert_sequence(got, list(range(1, sent[-1] + 1)))


def _authenticated_by(broker, workdir, auth):
    """The broker set up so that auth authenticates users phone and pub
    (password "pw"); -> nothing, dynsec is configured once it runs."""
    if auth == "password-file":
        pw = workdir / "passwords"
        for user in ("phone", "pub"):
            subprocess.run(["mosquitto_passwd", *(["-c"] if user == "phone" else []), "-b", str(pw), user, "pw"],
                           check=True, capture_output=True, timeout=30)
        if os.geteuid() == 0:
            acct = pwd.getpwnam("mosquitto")
            os.chown(pw, acct.pw_uid, acct.pw_gid)
        broker.extra_conf += [f"password_file {pw}"]
    else:
        # Loaded first, dynamic-security decides every BASIC_AUTH itself:
        # persist-lmdb's callback is never called.
        config = dynsec_config(workdir, "admin", "admin-pw")
        broker.plugins_before += [f"global_plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {config}"]


@pytest.mark.parametrize("auth", ["dynsec-first", "password-file"])
def test_order_kept_whatever_authenticates(broker, workdir, auth):
    """The stored backlog goes back in parts, and what is published while it
    does comes after it, once each and in order, both when persist-lmdb sees
    the client's BASIC_AUTH (a password file, checked after the plugins) and
    when a plugin loaded before it decides (dynamic-security): the hand-back
    then starts at the CONNECT."""
    broker.plugin_opts["queue_storage"] = "disk"
    broker.plugin_opts["queue_window"] = "64"
    broker.max_inflight = 20
    _authenticated_by(broker, workdir, auth)
    broker.start()
    if auth == "dynsec-first":
        with Client(broker, "admin", version=V5, username="admin", password="admin-pw") as admin:
            admin.subscribe("$CONTROL/dynamic-security/v1/response", 1)
            dynsec(admin, [
                {"command": "createRole", "rolename": "inbox"},
                *({"command": "addRoleACL", "rolename": "inbox", "acltype": t, "topic": "inbox/#", "allow": True}
                  for t in ("publishClientSend", "publishClientReceive", "subscribePattern")),
                *({"command": "createClient", "username": u, "password": "pw"} for u in ("phone", "pub")),
                *({"command": "addClientRole", "username": u, "rolename": "inbox"} for u in ("phone", "pub")),
            ])
    as_phone = {"version": V5, "persistent": True, "session_expiry": 3600, "username": "phone", "password": "pw"}
    with Client(broker, "phone-1", **as_phone) as c:
        c.subscribe("inbox/phone", 1)
    with Client(broker, "pub-1", version=V5, username="pub", password="pw") as p:
        p.publish_numbered("inbox/phone", range(1, 301))
    with Client(broker, "phone-1", **as_phone) as c:
        with Client(broker, "pub-1", version=V5, username="pub", password="pw") as p:
            p.publish_numbered("inbox/phone", range(301, 341))
        got = seqs_of(c.collect(340, timeout=60))
    assert_sequence(got, list(range(1, 341)))


def test_group_body_outlives_one_members_drain(broker):
    """One body for both members of a group: the first member's drain and
    acknowledgements leave the second member's copy, also across a restart."""
    _disk(broker)
    _offline(broker, "disk-a", "grp/#")
    _offline(broker, "disk-b", "grp/#")
    _publish(broker, "grp/t", range(1, 501), size=100)
    with Client(broker, "disk-a", version=V5, persistent=True, session_expiry=3600) as a:
        assert_sequence(seqs_of(a.collect(500, timeout=30)), list(range(1, 501)))
    broker.restart("kill")
    with Client(broker, "disk-b", version=V5, persistent=True, session_expiry=3600) as b:
        assert_sequence(seqs_of(b.collect(500, timeout=30)), list(range(1, 501)))


def test_kill_during_drain_loses_nothing(broker):
    """kill -9 while a client is being sent a 20,000-message backlog: after
    the restart it is sent the rest, in order, from where its
    acknowledgements had reached the database."""
    _disk(broker)
    _offline(broker, "disk-sub", "disk/#")
    _publish(broker, "disk/t", range(1, 20001))
    c = Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600)
    try:
        c.wait_for(2000, timeout=30)
        broker.kill()
        first = seqs_of(c.messages())
    finally:
        c.drop()
    broker.start()
    with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c2:
        rest = _until(c2, 20000)
    assert_sequence(first, list(range(1, len(first) + 1)), "before the kill")
    # The second connection starts at or before the first one's end (what
    # was acknowledged but not yet committed comes again) and runs to 20000.
    assert rest and rest[0] <= len(first) + 1, f"resumed at {rest[0]} after {len(first)}"
    assert_sequence(rest, list(range(rest[0], 20001)), "after the restart")


def test_takeover_during_drain(broker):
    """A second connection with the same client id takes the session over in
    the middle of its drain: it gets the rest, in order."""
    _disk(broker)
    _offline(broker, "disk-sub", "disk/#")
    _publish(broker, "disk/t", range(1, 20001))
    c = Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600)
    try:
        c.wait_for(2000, timeout=30)
        with Client(broker, "disk-sub", version=V5, persistent=True, session_expiry=3600) as c2:
            assert c2.session_present
            first = seqs_of(c.messages())
            rest = _until(c2, 20000)
    finally:
        c.drop()
    assert_sequence(first, list(range(1, len(first) + 1)), "first connection")
    assert rest and rest[0] <= len(first) + 1, f"resumed at {rest[0]} after {len(first)}"
    assert_sequence(rest, list(range(rest[0], 20001)), "second connection")


@pytest.mark.parametrize("restart", [None, "kill"])
def test_pubrel_outstanding_at_leave_is_resent_as_pubrel(broker, restart):
    """A QoS 2 subscriber leaves after the PUBRELs of its whole in-flight
    window, before its PUBCOMPs; more messages are queued while it is away
    (and the tick would release its session). Back, it must get those
    PUBRELs again, not the messages as new PUBLISHes (a client that had the
    PUBREL may have handed the message on), then the rest in order."""
    inflight, later = 10, 5
    broker.max_inflight = inflight
    _disk(broker)
    sub = RawClient(broker.port, "disk-q2")
    sub.subscribe("q2/#", 2)
    with Client(broker, "disk-pub", version=V5) as p:
        p.publish_numbered("q2/t", range(1, inflight + 1), qos=2)
        mids = []
        for _ in range(inflight):
            kind, flags, data = sub.read()
            assert kind == PUBLISH, f"expected a PUBLISH, got type {kind}"
            mids.append(sub.publish_in(flags, data)[3])
            sub.ack(PUBREC, mids[-1])
        for mid in mids:
            sub.read_pubrel(mid)
        sub.close()
        time.sleep(0.5)
        p.publish_numbered("q2/t", range(inflight + 1, inflight + later + 1), qos=2)
    time.sleep(1.5)
    if restart:
        broker.kill()
        broker.start()
    sub = RawClient(broker.port, "disk-q2")
    try:
        assert sub.session_present
        for mid in mids:
            sub.read_pubrel(mid)
            sub.ack(PUBCOMP, mid)
        got = []
        for _ in range(later):
            kind, flags, data = sub.read()
            assert kind == PUBLISH, f"expected a PUBLISH, got type {kind}"
            _, qos, _, mid, _, body = sub.publish_in(flags, data)
            got.append(parse_seq(body))
            sub.ack(PUBREC, mid)
        assert_sequence(got, list(range(inflight + 1, inflight + later + 1)), "queued while away")
    finally:
        sub.close()


def _read_publish(sub):
    """The next PUBLISH (PUBRELs on the way are completed): -> (qos, packet id, body)."""
    while True:
        kind, flags, data = sub.read()
        if kind == PUBLISH:
            _, qos, _, mid, _, body = sub.publish_in(flags, data)
            return qos, mid, body
        assert kind == PUBREL, f"expected a PUBLISH or PUBREL, got type {kind}"
        sub.ack(PUBCOMP, int.from_bytes(data[:2], "big"))


def test_sent_message_keeps_its_packet_id(broker):
    """A stored backlog is handed back; the client takes the first messages
    and leaves two QoS 2 ones unanswered (it delivered them at PUBLISH and
    keeps their ids until PUBREL). The broker is killed before a commit;
    the restart hands the session over whole (the journal names it) and the
    broker moves the messages into flight without sending them, which it
    reports as a publish state, as if never sent; a clean stop stores that.
    Handed back when the client returns, they must come under the same ids:
    under new ones the client would deliver them twice."""
    broker.plugin_opts["commit_interval_ms"] = "10000"
    _disk(broker)
    sub = RawClient(broker.port, "disk-ids", version=5)
    sub.subscribe("ids/#", 2)
    sub.close()
    with Client(broker, "disk-pub", version=V5) as p:
        for i in range(1, 61):
            p.publish("ids/t", numbered_payload(i), qos=1 + (i - 1) // 2 % 2)
    broker.restart()
    sub = RawClient(broker.port, "disk-ids", version=5)
    unanswered = {}
    for n in range(12):
        qos, mid, body = _read_publish(sub)
        if qos == 1:
            sub.ack(PUBACK, mid)
        elif n < 8:
            sub.ack(PUBREC, mid)
        else:
            unanswered[parse_seq(body)] = mid
    assert len(unanswered) == 2, unanswered
    broker.kill()
    sub.close()
    broker.start()
    broker.restart()
    sub = RawClient(broker.port, "disk-ids", version=5)
    try:
        got = {}
        while not set(unanswered) <= set(got):
            qos, mid, body = _read_publish(sub)
            sub.ack(PUBACK if qos == 1 else PUBREC, mid)
            if qos == 2:
                got[parse_seq(body)] = mid
        assert {n: got.get(n) for n in unanswered} == unanswered
    finally:
        sub.close()
