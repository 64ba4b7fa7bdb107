"""The persist-lmdb CLI against data written by a real broker: the read
commands (safe while the broker runs), verify, export, delete-account,
rekey, compact, and bad input."""

import base64
import json
import os
import re
from pathlib import Path

import pytest

from harness import (
    Client, V5, check_seed, flip_large_record, io_fault, numbered_payload,
    queue_one_large_message, run_cli, seed_data, write_key,
)

BINARY = b"\x00\x01\xfe binary"
# client id -> (username, subscriptions)
ACCOUNTS = {
    "alice-phone": ("alice", ["news/#"]),
    "alice-laptop": ("alice", ["news/#"]),
    "bob-phone": ("bob", ["news/#", "bob/inbox"]),
}
NEWS = [(f"news/{s}", numbered_payload(s)) for s in range(1, 6)]
ALICE_EXPECTED = NEWS
BOB_EXPECTED = NEWS + [("bob/inbox", BINARY)]
RETAINED = {"users/alice/status": b"online", "group/motd": b"hello all"}


@pytest.fixture
def cli(broker):
    """cli(*args, key=..., db=...) -> CompletedProcess (bytes); --db and
    --key-file of the test's broker unless given (None leaves one out)."""

    def run(*args, key=broker.key_file, db=broker.db_dir):
        return run_cli(broker, *args, key=key, db=db, text=False, timeout=60)

    return run


def out(r) -> str:
    return r.stdout.decode()


def err(r) -> str:
    return r.stderr.decode()


def assert_rc(r, rc):
    assert r.returncode == rc, (
        f"exit status {r.returncode}, expected {rc}\nstdout:\n{out(r)}\nstderr:\n{err(r)}")


def assert_one_error_line(r, rc, fragment):
    """Exit status rc, and stderr is one line 'persist-lmdb: ...' holding fragment."""
    assert_rc(r, rc)
    lines = err(r).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("persist-lmdb: "), f"stderr:\n{err(r)}"
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in {lines[0]!r}"


def populate(broker):
    """Three persistent sessions of two users, offline, with messages queued
    (5 for each of alice's, 6 for bob's), and two retained messages."""
    for cid, (user, subs) in ACCOUNTS.items():
        with Client(broker, cid, version=V5, persistent=True, session_expiry=3600, username=user) as c:
            for t in subs:
                c.subscribe(t, 1)
    with Client(broker, "cli-pub") as p:
        p.publish_many([(t, pl, 1) for t, pl in NEWS])
        p.publish("bob/inbox", BINARY, qos=1)
        for t, pl in RETAINED.items():
            p.publish(t, pl, qos=1, retain=True)
    broker.settle()


def receive(broker, cid, count):
    """Resumes cid's session; (session present, [(topic, payload)])."""
    user = ACCOUNTS[cid][0]
    with Client(broker, cid, version=V5, persistent=True, session_expiry=3600, username=user) as c:
        present = c.session_present
        msgs = c.collect(count) if count else c.listen(0.5)
    return present, [(m.topic, m.payload) for m in msgs]


def retained_now(broker, filt="#"):
    with Client(broker, "cli-retained-check") as c:
        c.subscribe(filt, 1)
        msgs = c.listen(0.5)
    return {m.topic: m.payload for m in msgs if m.retain}


def sessions_table(text):
    lines = text.splitlines()
    assert lines[0].split("\t") == ["CLIENTID", "USERNAME", "EXPIRY", "QUEUED", "WILL"], text
    return {f[0]: f[1:] for f in (l.split("\t") for l in lines[1:])}


def json_lines(text):
    return [json.loads(l) for l in text.splitlines()]


def stats_table(text):
    """stats output: {'epoch': '3', ...} and {db: (entries, bytes)}."""
    head, _, table = text.partition("\nDATABASE")
    info = dict(re.split(r"\s{2,}", l, maxsplit=1) for l in head.splitlines() if l.strip())
    dbs = {}
    for l in table.splitlines()[1:]:
        name, entries, size = l.split()
        dbs[name] = (int(entries), int(size))
    return info, dbs


# --------------------------------------------------------------------------
# Read commands, while the broker runs
# --------------------------------------------------------------------------


def test_read_commands_while_broker_runs(broker, cli):
    broker.start()
    populate(broker)

    r = cli("stats")
    assert_rc(r, 0)
    info, dbs = stats_table(out(r))
    assert info["key id"] == "1" and int(info["epoch"]) >= 1 and int(info["records"]) > 0, out(r)
    assert dbs["sessions"][0] == 3 and dbs["queues"][0] == 16 and dbs["retained"][0] == 2, out(r)
    assert dbs["subs"][0] == 4 and dbs["msgs"][0] == 8, out(r)

    r = cli("sessions")
    assert_rc(r, 0)
    assert sessions_table(out(r)) == {
        "alice-phone": ["alice", "3600", "5", "no"],
        "alice-laptop": ["alice", "3600", "5", "no"],
        "bob-phone": ["bob", "3600", "6", "no"],
    }
    r = cli("sessions", "--username", "alice")
    assert_rc(r, 0)
    assert sorted(sessions_table(out(r))) == ["alice-laptop", "alice-phone"]
    r = cli("sessions", "--prefix", "bob-")
    assert_rc(r, 0)
    assert sorted(sessions_table(out(r))) == ["bob-phone"]
    assert_one_error_line(cli("sessions", "--username", "carol"), 1, "no session")
    r = cli("sessions", "--json")
    assert_rc(r, 0)
    assert sorted((o["clientid"], o["username"], o["queued"], o["will"]) for o in json_lines(out(r))) == [
        ("alice-laptop", "alice", 5, False), ("alice-phone", "alice", 5, False), ("bob-phone", "bob", 6, False)]

    r = cli("queue", "bob-phone")
    assert_rc(r, 0)
    rows = [l.split("\t") for l in out(r).splitlines()]
    assert rows[0] == ["SEQ", "DIR", "QOS", "STATE", "MID", "STORE_ID", "TOPIC", "PAYLOAD"]
    expected = [(t, p.decode()) for t, p in NEWS] + [("bob/inbox", "0x" + BINARY.hex())]
    assert [(f[6], f[7]) for f in rows[1:]] == expected, out(r)
    assert all(f[1] == "out" and f[2] == "1" for f in rows[1:]), out(r)
    seqs = [int(f[0]) for f in rows[1:]]
    assert seqs == sorted(seqs) and seqs[0] >= 1 << 40, seqs

    r = cli("queue", "alice-phone", "--json", "--limit", "2")
    assert_rc(r, 0)
    entries = json_lines(out(r))
    assert [(e["topic"], base64.b64decode(e["payload"])) for e in entries] == NEWS[:2]
    assert all(e["qos"] == 1 and e["direction"] == "out" for e in entries)
    assert_one_error_line(cli("queue", "nobody"), 1, "no session")

    r = cli("verify")
    assert_rc(r, 0)
    assert "verify: no problems found" in out(r)

    r = cli("export")
    assert_rc(r, 0)
    records = json_lines(out(r))
    by_kind = {}
    for rec in records:
        by_kind.setdefault(rec["kind"], []).append(rec)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "message": 8, "retained": 2, "session": 3, "subscription": 4, "queue": 16}
    bodies = {m["store_id"]: m for m in by_kind["message"]}
    referenced = {q["store_id"] for q in by_kind["queue"]} | {r["store_id"] for r in by_kind["retained"]}
    assert set(bodies) == referenced
    bob_queue = sorted((q["seq"], q["store_id"]) for q in by_kind["queue"] if q["clientid"] == "bob-phone")
    assert [(bodies[sid]["topic"], base64.b64decode(bodies[sid]["payload"])) for _, sid in bob_queue] == BOB_EXPECTED
    assert {r["topic"]: base64.b64decode(bodies[r["store_id"]]["payload"]) for r in by_kind["retained"]} == RETAINED
    assert {s["clientid"]: (s["username"], s["session_expiry_interval"]) for s in by_kind["session"]} == {
        cid: (user, 3600) for cid, (user, _) in ACCOUNTS.items()}

    # The broker's own config names the database and the key.
    r = cli("-c", broker.conf_path, "sessions", db=None, key=None)
    assert_rc(r, 0)
    assert sorted(sessions_table(out(r))) == sorted(ACCOUNTS)

    # Write commands need the broker stopped.
    new_key = broker.root / "new.key"
    write_key(new_key)
    for args in (["delete-account", "--username", "alice"], ["compact"], ["rekey", "--new-key-file", new_key]):
        assert_one_error_line(cli(*args), 3, "stop it first")

    # None of this disturbed the broker.
    assert receive(broker, "bob-phone", 6) == (True, BOB_EXPECTED)


def test_verify_finds_tampered_record(broker, cli):
    """One message with a 3000-byte payload lands in an LMDB overflow page;
    flipping a byte of its ciphertext makes verify exit 1."""
    queue_one_large_message(broker, 3, large=2)
    assert_rc(cli("verify"), 0)
    flip_large_record(broker)

    r = cli("verify")
    assert_rc(r, 1)
    assert re.search(r"^rejected records +1$", out(r), re.M), out(r)
    assert "verify: 1 problem found" in out(r), out(r)
    assert "rejected a msgs record" in err(r), err(r)


# --------------------------------------------------------------------------
# delete-account
# --------------------------------------------------------------------------


def test_delete_account(broker, cli):
    broker.start()
    populate(broker)
    broker.stop()

    r = cli("delete-account", "--username", "alice", "--personal-topics", "users/%u/# devices/%c/#", "--json")
    assert_rc(r, 0)
    result = json.loads(out(r))
    assert sorted(result["sessions"]) == ["alice-laptop", "alice-phone"]
    assert result["retained"] == ["users/alice/status"]
    assert result["queued"] == 10
    # bob still references the news bodies: only the retained body goes.
    assert result["message_bodies"] == 1
    assert result["personal_topics_skipped"] is False
    assert result["skipped"] == []

    # Patterns with %u or %c inside a level are refused, as at start-up.
    r = cli("delete-account", "--username", "bob", "--personal-topics", "users/u-%u/#")
    assert_rc(r, 2)
    assert "must each be a whole topic level" in err(r), err(r)

    assert_rc(cli("verify"), 0)
    r = cli("delete-account", "--username", "alice")
    assert_rc(r, 1)
    assert "nothing matched" in err(r)
    r = cli("delete-account", "--clientid", "alice-phone")
    assert_rc(r, 1)

    broker.start()
    assert receive(broker, "alice-phone", 0) == (False, [])
    assert receive(broker, "alice-laptop", 0) == (False, [])
    assert receive(broker, "bob-phone", 6) == (True, BOB_EXPECTED)
    assert retained_now(broker) == {"group/motd": b"hello all"}


def test_delete_account_by_clientid_text(broker, cli):
    broker.start()
    populate(broker)
    broker.stop()

    r = cli("delete-account", "--clientid", "bob-phone")
    assert_rc(r, 0)
    text = out(r)
    assert "sessions deleted: 1\n  bob-phone\n" in text, text
    assert "queued messages deleted: 6\n" in text and "retained messages deleted: 0\n" in text, text
    # The inbox message was bob's alone.
    assert "message bodies deleted: 1\n" in text, text

    broker.start()
    assert receive(broker, "bob-phone", 0) == (False, [])
    assert receive(broker, "alice-phone", 5) == (True, ALICE_EXPECTED)
    assert retained_now(broker) == RETAINED


# --------------------------------------------------------------------------
# rekey
# --------------------------------------------------------------------------


def test_rekey(broker, cli):
    # Queued in the database's third open: the rekeyed database counts its
    # opens from 1 again, and what is queued after the rekey still comes last.
    broker.start()
    broker.restart()
    broker.restart()
    populate(broker)
    broker.stop()
    old_key = broker.key_file
    new_key = broker.root / "new.key"
    write_key(new_key)
    # What an interrupted rekey would leave behind.
    leftover = Path(f"{broker.db_dir}.rekey-new")
    leftover.mkdir()
    (leftover / "data.mdb").write_bytes(b"half-written junk")

    r = cli("rekey", "--new-key-file", new_key)
    assert_rc(r, 0)
    assert "plugin_opt_key_file" in out(r) and "destroy the old key" in out(r), out(r)
    assert "16 queued messages" in out(r), out(r)
    assert not leftover.exists()
    assert sorted(p.name for p in broker.db_dir.parent.iterdir()) == ["persist-lmdb"]

    assert_one_error_line(cli("stats"), 3, "does not match")
    r = cli("stats", key=new_key)
    assert_rc(r, 0)
    assert stats_table(out(r))[0]["key id"] == "2", out(r)
    assert_rc(cli("verify", key=new_key), 0)

    broker.assert_refuses("does not match this database")
    broker.plugin_opts["key_file"] = str(new_key)
    broker.start()
    # Queued after the rekey, then a restart: still after the older ones.
    with Client(broker, "cli-pub") as p:
        p.publish("news/6", numbered_payload(6), qos=1)
    broker.settle()
    broker.restart()
    assert receive(broker, "bob-phone", 7) == (True, BOB_EXPECTED + [("news/6", numbered_payload(6))])
    assert receive(broker, "alice-phone", 6) == (True, ALICE_EXPECTED + [("news/6", numbered_payload(6))])
    assert retained_now(broker) == RETAINED
    assert old_key.exists()


# --------------------------------------------------------------------------
# compact
# --------------------------------------------------------------------------


def test_compact(broker, cli):
    broker.start()
    seqs = seed_data(broker)
    with Client(broker, "bulk", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("bulk/t", 1)
    with Client(broker, "bulk-pub") as p:
        p.publish_numbered("bulk/t", range(1, 201), payload_size=8000)
    broker.settle()
    with Client(broker, "bulk", version=V5, persistent=True, session_expiry=3600) as c:
        c.collect(200, quiet=0.1)
    broker.settle()
    broker.stop()

    r = cli("compact")
    assert_rc(r, 0)
    m = re.search(r"data file: (\d+) bytes before, (\d+) bytes after", out(r))
    assert m, out(r)
    before, after = int(m.group(1)), int(m.group(2))
    assert before >= 200 * 8000 and after < before // 4, (before, after)
    assert broker.data_file.stat().st_size == after
    assert not Path(f"{broker.db_dir}.compact-new").exists()
    assert_rc(cli("verify"), 0)

    broker.start()
    check_seed(broker, seqs)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_input(broker, cli):
    r = cli("--help", db=None, key=None)
    assert_rc(r, 0)
    assert "Exit status" in out(r) and "delete-account" in out(r)
    r = cli("rekey", "--help", db=None, key=None)
    assert_rc(r, 0)
    assert "--new-key-file" in out(r)

    assert_one_error_line(cli("frobnicate"), 2, "unknown command")
    assert_one_error_line(cli("stats", "--frobnicate"), 2, "unknown option")
    assert_one_error_line(cli("stats", "--json"), 2, "does not apply")
    assert_one_error_line(cli("queue"), 2, "usage")
    assert_one_error_line(cli("rekey"), 2, "--new-key-file")
    assert_one_error_line(cli("delete-account"), 2, "--username")
    assert_one_error_line(cli("delete-account", "--username", "a", "--clientid", "b"), 2, "--username")
    assert_one_error_line(cli("stats", db=None), 2, "no database")
    assert_one_error_line(cli("stats", key=None), 2, "no key")
    assert_one_error_line(cli("-c", broker.root / "no.conf", "stats", db=None, key=None), 2, "no.conf")

    # The key is checked before the database is looked at.
    assert_one_error_line(cli("stats", key=broker.root / "no-such.key"), 3, "no-such.key")
    os.chmod(broker.key_file, 0o644)
    assert_one_error_line(cli("stats"), 3, "readable by group or others")
    os.chmod(broker.key_file, 0o600)
    # No database there: nothing is created, not even by a write command.
    assert_one_error_line(cli("stats"), 3, "no database")
    assert_one_error_line(cli("delete-account", "--username", "a"), 3, "no database")
    assert not broker.db_dir.exists()


def test_rekey_keeps_wills_and_connected_marks(broker, cli, clients):
    """A pending delayed will and a client connected at a crash survive a
    rekey: after it the crashed client's will is published at start-up."""
    broker.start()
    with Client(broker, "watcher", version=V5, persistent=True, session_expiry=3600) as w:
        w.subscribe("wills/#", 1)
    delayed = clients("dev-delayed", version=V5, persistent=True, session_expiry=3600,
                      will={"topic": "wills/delayed", "payload": b"delayed", "delay": 3600})
    delayed.drop()
    connected = clients("dev-connected", version=V5, persistent=True, session_expiry=3600,
                        will={"topic": "wills/connected", "payload": b"crashed"})
    broker.settle()

    r = cli("sessions")
    assert_rc(r, 0)
    table = sessions_table(out(r))
    assert table["dev-delayed"][3] == "yes" and table["dev-connected"][3] == "yes", out(r)
    r = cli("export")
    assert_rc(r, 0)
    wills = {o["clientid"]: o for o in json_lines(out(r)) if o["kind"] == "will"}
    assert base64.b64decode(wills["dev-delayed"]["payload"]) == b"delayed"
    connected_session = [o for o in json_lines(out(r)) if o.get("clientid") == "dev-connected"
                         and o["kind"] == "session"]
    assert connected_session[0]["online"] is True

    broker.kill()
    connected.drop()
    new_key = broker.root / "new.key"
    write_key(new_key)
    assert_rc(cli("rekey", "--new-key-file", new_key), 0)
    broker.plugin_opts["key_file"] = str(new_key)
    broker.start()

    with Client(broker, "watcher", version=V5, persistent=True, session_expiry=3600) as w:
        assert w.session_present
        msgs = w.collect(1)
    assert [(m.topic, m.payload) for m in msgs] == [("wills/connected", b"crashed")]
    r = cli("sessions", "--prefix", "dev-delayed", key=new_key)
    assert_rc(r, 0)
    assert sessions_table(out(r))["dev-delayed"][3] == "yes", out(r)


# --------------------------------------------------------------------------
# the intake journal
# --------------------------------------------------------------------------

def test_commands_that_rewrite_wait_for_the_journal(broker, cli, workdir):
    """After a kill -9 whose last acknowledgements only the journal holds,
    verify reports them, and rekey, compact and delete-account refuse until
    the broker has applied them; a rekey afterwards keeps the message ids
    and the sequence numbers."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    control = io_fault(broker, workdir)
    broker.plugin_opts["seq_property"] = "seq"
    broker.start()
    with Client(broker, "j-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("j/#", 1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("msg-id", "once")
    with Client(broker, "j-pub") as p:
        p.mqtt.publish("j/t", numbered_payload(1), qos=1, properties=props).wait_for_publish(10)
        broker.settle()
        # Commits fail from here: what follows is acknowledged from the journal.
        control.write_text("eio")
        os.chmod(control, 0o644)
        p.publish_many([("j/t", numbered_payload(s), 1) for s in range(2, 6)])
    broker.kill()
    control.unlink()

    r = cli("verify")
    assert_rc(r, 0)
    pending = int(re.search(r"journal records to apply\s+(\d+)", out(r)).group(1))
    assert pending >= 4, out(r)
    new_key = broker.root / "new.key"
    write_key(new_key)
    for args in (("rekey", "--new-key-file", new_key), ("compact",), ("delete-account", "--clientid", "j-sub")):
        assert_one_error_line(cli(*args), 1, "start the broker once")

    broker.start()
    broker.stop()
    r = cli("verify")
    assert_rc(r, 0)
    assert re.search(r"journal records to apply\s+0\b", out(r)), out(r)
    assert_rc(cli("rekey", "--new-key-file", new_key), 0)

    broker.plugin_opts["key_file"] = str(new_key)
    broker.start()
    with Client(broker, "j-pub") as p:
        info = p.mqtt.publish("j/t", b"duplicate", qos=1, properties=props)
        info.wait_for_publish(10)
        p.publish("j/t", numbered_payload(6), qos=1)
    c = Client(broker, "j-sub", version=V5, persistent=True, session_expiry=3600, connect=False)
    seqs = []
    deliver = c.mqtt.on_message

    def on_message(cl, ud, msg):
        seqs.append(dict(msg.properties.UserProperty).get("seq") if hasattr(msg.properties, "UserProperty") else None)
        deliver(cl, ud, msg)

    c.mqtt.on_message = on_message
    c.connect()
    c.listen(1.0)
    c.disconnect()
    # Messages 1..5 from before, 6 after; the duplicate dropped; numbers go on.
    assert seqs == [str(i) for i in range(1, 7)], seqs
