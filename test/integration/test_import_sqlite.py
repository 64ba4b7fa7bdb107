"""persist-lmdb import-sqlite: a database written by Mosquitto's own
persist-sqlite plugin (the real mosquitto_persist_sqlite.so) is imported, and
persist-lmdb then serves its offline clients their queued messages, keeps
their subscriptions routing and delivers the retained messages."""

import glob
import json
import os
import sqlite3
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import Broker, Client, V311, V5, free_port, give_to_broker, numbered_payload, run_cli

SQLITE_PLUGIN_GLOBS = [
    "/usr/lib/x86_64-linux-gnu/mosquitto/mosquitto_persist_sqlite.so",
    "/usr/lib/*/mosquitto/mosquitto_persist_sqlite.so",
    "/usr/lib/mosquitto/mosquitto_persist_sqlite.so",
    "/usr/local/lib/mosquitto/mosquitto_persist_sqlite.so",
]

# Sessions: client id -> (protocol, session expiry, username, [(filter, qos, subscription id)]).
NEVER = 0xFFFFFFFF  # persist-sqlite stores this interval as -1
SESSIONS = {
    "imp-v5": (V5, 3600, "alice", [("all/#", 2, 42), ("inbox/v5/#", 1, None)]),
    "imp-v311": (V311, None, None, [("all/#", 1, None), ("inbox/v311/#", 2, None)]),
    "imp-never": (V5, NEVER, None, [("all/#", 1, None)]),
}
WILLER = "imp-willer"  # connected when the persist-sqlite broker stops; its will goes to all/#
WILL = ("all/will", b"willer gone")

USER_PROPS = [("k", "v1"), ("k", "v2"), ("ключ", "значение")]
BIN_V5 = bytes(range(256))
BIN_V311 = b"\x00\xff\x00 for v311 \x00"
SEQ = list(range(1, 21))
RETAINED = {"ret/text": (b"retained text", [("r", "1")]), "ret/bin": (b"\x00\x01\x02", [])}


class PropsClient(Client):
    """A Client that also records each message's MQTT v5 properties."""

    def __init__(self, *args, **kw):
        self.props = []
        super().__init__(*args, **kw)

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.props.append((msg.topic, msg.properties))
        super()._on_message(client, userdata, msg)


def sqlite_plugin() -> Path:
    for pattern in SQLITE_PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    pytest.fail("Mosquitto's persist-sqlite plugin (mosquitto_persist_sqlite.so) is not installed")


def sqlite_broker(workdir: Path) -> Broker:
    """A broker with persist-sqlite only, its file in <dir>/data/mosquitto.sqlite3,
    committing at every loop iteration (flush_period 0)."""
    root = workdir / "sqlite"
    root.mkdir()
    give_to_broker(root)
    b = Broker(root, free_port(), workdir / "unused.key", sqlite_plugin())
    b.plugin_opts = {"flush_period": "0"}
    return b


def sqlite_file(b: Broker) -> Path:
    return b.data_dir / "mosquitto.sqlite3"


@pytest.fixture
def cli(broker):
    """cli(*args) runs persist-lmdb on the test broker's database and key."""
    return lambda *args: run_cli(broker, *args, text=False, timeout=120)


@pytest.fixture
def importer(cli):
    """importer(file, *args) runs import-sqlite into the test broker's database."""
    return lambda file, *args: cli("import-sqlite", file, *args)


def assert_rc(r, rc):
    assert r.returncode == rc, (
        f"exit status {r.returncode}, expected {rc}\nstdout:\n{r.stdout.decode()}\nstderr:\n{r.stderr.decode()}")


def assert_one_error_line(r, rc, fragment):
    assert_rc(r, rc)
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persist-lmdb: "), f"stderr:\n{r.stderr.decode()}"
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"


def assert_nothing_created(db: Path):
    assert not db.exists(), f"{db} was created"
    leftovers = list(db.parent.glob(db.name + ".import-*"))
    assert not leftovers, f"left behind: {leftovers}"


def session_client(b, cid, cls=Client):
    version, expiry, user, _ = SESSIONS[cid]
    return cls(b, cid, version=version, persistent=True, session_expiry=expiry, username=user)


def populate(b: Broker) -> None:
    """Offline sessions with messages queued and retained messages, written
    by persist-sqlite; WILLER stays connected."""
    for cid, (_, _, _, subs) in SESSIONS.items():
        with session_client(b, cid) as c:
            for filt, qos, sub_id in subs:
                c.subscribe(filt, qos, sub_id=sub_id)
    willer = Client(b, WILLER, version=V5, persistent=True, session_expiry=3600,
                    will={"topic": WILL[0], "payload": WILL[1], "qos": 1})
    with Client(b, "imp-pub", version=V5) as p:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = USER_PROPS
        props.ContentType = "text/plain"
        props.CorrelationData = b"\x00\x01\xff"
        props.ResponseTopic = "reply/here"
        props.PayloadFormatIndicator = 1
        p.mqtt.publish("all/props", b"hello", qos=1, properties=props).wait_for_publish(20)
        p.publish("inbox/v5/bin", BIN_V5, qos=2)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("to", "v311")]
        p.mqtt.publish("inbox/v311/bin", BIN_V311, qos=2, properties=props).wait_for_publish(20)
        # One at a time: a QoS 2 message is routed at PUBREL, so the queue
        # order is the order of publication only if each is complete first.
        for s in SEQ:
            p.publish("all/seq", numbered_payload(s), qos=1 + s % 2)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 3600
        p.mqtt.publish("all/expiring", b"expires in an hour", qos=1, properties=props).wait_for_publish(20)
        p.publish("all/empty", b"", qos=1)
        for topic, (payload, user_props) in RETAINED.items():
            props = Properties(PacketTypes.PUBLISH)
            if user_props:
                props.UserProperty = user_props
            p.mqtt.publish(topic, payload, qos=1, retain=True, properties=props).wait_for_publish(20)
    return willer


def expected_queue(cid):
    """(topic, payload, qos) in the order the client must get them. The
    will comes once: the broker published it when it stopped, and it must
    not be published again."""
    _, _, _, subs = SESSIONS[cid]
    all_qos = next(q for f, q, _ in subs if f == "all/#")
    inbox = {"imp-v5": [("inbox/v5/bin", BIN_V5, 1)], "imp-v311": [("inbox/v311/bin", BIN_V311, 2)]}
    return ([("all/props", b"hello", 1)] + inbox.get(cid, [])
            + [("all/seq", numbered_payload(s), min(all_qos, 1 + s % 2)) for s in SEQ]
            + [("all/expiring", b"expires in an hour", 1), ("all/empty", b"", 1), (WILL[0], WILL[1], 1)])


def user_props(props):
    return list(getattr(props, "UserProperty", []) or []) if props is not None else []


def test_import_sqlite(workdir, broker, cli, importer):
    sq = sqlite_broker(workdir)
    try:
        sq.start()
        willer = populate(sq)
        # While the broker has the file open, its write-ahead log is live.
        r = importer(sqlite_file(sq))
        assert_one_error_line(r, 3, "write-ahead log")
        assert_nothing_created(broker.db_dir)
        # A clean stop publishes WILLER's will (queued for the all/# sessions)
        # and leaves its row in persist-sqlite's wills table.
        sq.stop()
        willer.drop()
    finally:
        sq.close()

    with sqlite3.connect(f"file:{sqlite_file(sq)}?immutable=1", uri=True) as db:
        intervals = {cid: i for cid, i in db.execute("SELECT client_id, session_expiry_interval FROM clients")}
        wills = db.execute("SELECT count(*) FROM wills").fetchone()[0]
        props_json = [p for (p,) in db.execute("SELECT properties FROM base_msgs WHERE properties IS NOT NULL")]
    db.close()
    assert intervals == {"imp-v5": 3600, "imp-v311": -1, "imp-never": -1, WILLER: 3600}, intervals
    assert wills == 1
    assert any('"user-property"' in p and '"correlation-data"' in p for p in props_json), props_json

    r = importer(sqlite_file(sq))
    assert_rc(r, 0)
    lines = r.stdout.decode().splitlines()
    queued = sum(len(expected_queue(cid)) for cid in SESSIONS)
    bodies = len(expected_queue("imp-v5")) + 1 + len(RETAINED)  # + inbox/v311/bin
    assert lines[0] == (f"imported into {broker.db_dir}: {bodies} message bodies, {len(RETAINED)} retained "
                        f"messages, 4 sessions, 5 subscriptions, {queued} queued messages"), lines
    assert "not imported: 1 will (the broker published them when it stopped)" in lines, lines
    assert r.stderr == b"", r.stderr.decode()
    assert not list(broker.db_dir.parent.glob(broker.db_dir.name + ".import-*"))
    r = cli("verify")
    assert_rc(r, 0)
    assert "verify: no problems found" in r.stdout.decode()
    r = cli("sessions", "--json")
    assert_rc(r, 0)
    sessions = {o["clientid"]: (o["username"], o["session_expiry_interval"], o["queued"], o["will"])
                for o in map(json.loads, r.stdout.decode().splitlines())}
    assert sessions == {
        "imp-v5": ("alice", 3600, len(expected_queue("imp-v5")), False),
        "imp-v311": (None, NEVER, len(expected_queue("imp-v311")), False),
        "imp-never": (None, NEVER, len(expected_queue("imp-never")), False),
        WILLER: (None, 3600, 0, False),
    }, sessions

    # Into a database that exists: refused, and it is left alone.
    before = (broker.db_dir / "data.mdb").read_bytes()
    assert_one_error_line(importer(sqlite_file(sq)), 3, "already holds a database")
    assert (broker.db_dir / "data.mdb").read_bytes() == before

    broker.start()
    assert "persist-lmdb: restored" in broker.log()

    retained = PropsClient(broker, "imp-retained", version=V5)
    retained.subscribe("ret/#", 1)
    got = retained.collect(len(RETAINED))
    assert {m.topic: (m.payload, m.retain) for m in got} == {t: (p, True) for t, (p, _) in RETAINED.items()}
    assert {t: user_props(p) for t, p in retained.props} == {t: u for t, (_, u) in RETAINED.items()}
    retained.disconnect()

    clients = {}
    for cid in SESSIONS:
        c = clients[cid] = session_client(broker, cid, PropsClient)
        assert c.session_present, f"{cid}: session lost"
        exp = expected_queue(cid)
        got = [(m.topic, m.payload, m.qos) for m in c.collect(len(exp), quiet=0.5)]
        # paho hands a QoS 2 message over at PUBREL, after QoS 1 messages
        # sent behind it: the order holds within each QoS.
        assert len(got) == len(exp), f"{cid}: {[(t, q) for t, _, q in got]}"
        for qos in (1, 2):
            assert [m for m in got if m[2] == qos] == [m for m in exp if m[2] == qos], (
                f"{cid}, QoS {qos}: {[(t, pl) for t, pl, q in got if q == qos]}")
        assert not any(m.dup for m in c.messages()), cid
    with Client(broker, WILLER, version=V5, persistent=True, session_expiry=3600) as w:
        assert w.session_present, "the will's session lost"

    # MQTT 5: properties and subscription identifiers as published.
    v5 = clients["imp-v5"]
    props = dict(v5.props)
    p = props["all/props"]
    assert user_props(p) == USER_PROPS
    assert (p.ContentType, p.CorrelationData, p.ResponseTopic, p.PayloadFormatIndicator) == (
        "text/plain", b"\x00\x01\xff", "reply/here", 1)
    assert 0 < props["all/expiring"].MessageExpiryInterval <= 3600
    assert not hasattr(props["all/seq"], "MessageExpiryInterval")
    assert [m.sub_ids for m in v5.messages("all/props")] == [[42]]
    assert [m.sub_ids for m in v5.messages("inbox/v5/bin")] == [[]]

    # The subscriptions still route.
    for c in clients.values():
        c.clear()
    with Client(broker, "imp-pub-after", version=V5) as p:
        p.publish("all/after", b"after", qos=1)
        p.publish("inbox/v311/after", b"for v311", qos=2)
    for cid, c in clients.items():
        exp = [("all/after", b"after")] + ([("inbox/v311/after", b"for v311")] if cid == "imp-v311" else [])
        got = c.collect(len(exp))
        assert sorted((m.topic, m.payload) for m in got) == sorted(exp), cid
    assert [m.sub_ids for m in clients["imp-v5"].messages("all/after")] == [[42]]
    for c in clients.values():
        c.disconnect()


def small_sqlite_db(workdir: Path) -> Path:
    """A persist-sqlite database with one offline session, two messages
    queued for it and two retained messages, one on a topic that looks like
    a number."""
    sq = sqlite_broker(workdir)
    try:
        sq.start()
        with Client(sq, "small-sub", version=V5, persistent=True, session_expiry=3600) as c:
            c.subscribe("small/#", 1)
        with Client(sq, "small-pub", version=V5) as p:
            p.publish("small/1", b"one", qos=1)
            p.publish("small/2", b"two", qos=1)
            p.publish("small/ret", b"kept", qos=1, retain=True)
            p.publish("0123", b"numeric", qos=1, retain=True)
        sq.stop()
    finally:
        sq.close()
    return sqlite_file(sq)


def test_import_refuses(workdir, broker, importer):
    db = broker.db_dir

    r = importer(workdir / "absent.sqlite3")
    assert_one_error_line(r, 2, "cannot read")
    not_sqlite = workdir / "not-sqlite"
    not_sqlite.write_bytes(os.urandom(4096))
    assert_one_error_line(importer(not_sqlite), 2, "is not a persist-sqlite database")
    other = workdir / "other.sqlite3"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE things (x)")
    c.close()
    assert_one_error_line(importer(other), 2, "is not a persist-sqlite database: no such table: version_info")
    old = workdir / "old.sqlite3"
    with sqlite3.connect(old) as c:
        c.execute("CREATE TABLE version_info (component TEXT, major INT, minor INT, patch INT)")
        c.execute("INSERT INTO version_info VALUES ('database_schema', 1, 0, 0)")
    c.close()
    assert_one_error_line(importer(old), 2, "schema version 1.0.0")
    assert_nothing_created(db)

    good = small_sqlite_db(workdir)
    # A directory with something in it is not taken over.
    db.mkdir()
    give_to_broker(db)
    (db / "something").write_text("x")
    assert_one_error_line(importer(good), 3, "is not empty")
    (db / "something").unlink()

    # A damaged row stops the import; --drop-damaged leaves it out.
    damaged = workdir / "damaged.sqlite3"
    damaged.write_bytes(good.read_bytes())
    with sqlite3.connect(damaged) as c:
        rowid = c.execute("SELECT min(rowid) FROM client_msgs").fetchone()[0]
        c.execute("UPDATE client_msgs SET qos = 7 WHERE rowid = ?", (rowid,))
        c.execute("UPDATE base_msgs SET properties = 'not json' WHERE topic = 'small/ret'")
    c.close()
    r = importer(damaged)
    assert_rc(r, 1)
    err = r.stderr.decode().splitlines()
    assert len(err) == 3, err
    assert f"client_msgs row {rowid} cannot be imported: column qos holds 7, outside 0..2" in err[0] + err[1], err
    assert "column properties is not a JSON array" in err[0] + err[1], err
    assert "2 damaged rows" in err[2] and "nothing imported" in err[2], err
    assert db.is_dir() and not any(db.iterdir()), "the empty directory changed"
    assert not list(db.parent.glob(db.name + ".import-*"))

    r = importer(damaged, "--drop-damaged")
    assert_rc(r, 0)
    out = r.stdout.decode().splitlines()
    assert out[0].endswith("2 message bodies, 1 retained messages, 1 sessions, 1 subscriptions, 1 queued messages"), out
    assert "not imported: 1 message body nothing refers to (the broker drops them when it restores)" in out, out
    assert "not imported: 2 damaged rows (--drop-damaged)" in out, out
    err = r.stderr.decode().splitlines()
    assert len(err) == 3 and all(l.endswith("; left out") for l in err[:2]), err
    assert "2 rows hold a topic or publisher name that persist-sqlite stored as a number" in err[2], err  # body and retains

    broker.start()
    with Client(broker, "small-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        got = c.collect(1)
    assert [(m.topic, m.payload) for m in got] == [("small/2", b"two")]
    # persist-sqlite's STRING column turned the topic into a number.
    with Client(broker, "small-retained", version=V5) as c:
        c.subscribe("#", 1)
        got = c.collect(1)
    assert [(m.topic, m.payload, m.retain) for m in got] == [("123", b"numeric", True)]
