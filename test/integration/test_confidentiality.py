"""No client id, username, topic, payload or will of a client appears in
the database files in clear."""

import re
import time

from harness import REPO, V5, V311, Client, mdb_dump_all, salts_of

SECRETS = {
    "client id (v5)": b"secret-client-XYZ",
    "client id (v3.1.1)": b"secret-client311-UVW",
    "username": b"secret-user-QRS",
    "topic": b"topic/secret-ABC",
    "payload": b"PAYLOAD-SECRET-123",
    "retained topic": b"retained/secret-DEF",
    "retained payload": b"RETAINED-SECRET-456",
    "will topic": b"will/secret-GHI",
    "will payload": b"WILL-SECRET-789",
}


def leaks(broker):
    """{file name: [secret names found in it]} over the database directory."""
    found = {}
    files = sorted(p for p in broker.db_dir.iterdir() if p.is_file())
    assert any(p.name == "data.mdb" for p in files), f"no data.mdb in {broker.db_dir}: {files}"
    for p in files:
        data = p.read_bytes()
        hit = [name for name, s in SECRETS.items() if s in data]
        if hit:
            found[p.name] = hit
    return found


def test_database_files_hold_no_plaintext(broker):
    broker.start()
    secret_payload = SECRETS["payload"].decode()
    topic = SECRETS["topic"].decode()
    will = {"topic": SECRETS["will topic"].decode(), "payload": SECRETS["will payload"], "qos": 1, "delay": 30}
    with Client(broker, SECRETS["client id (v5)"].decode(), version=V5, persistent=True,
                session_expiry=3600, username=SECRETS["username"].decode()) as c:
        c.subscribe(topic, 1)
    with Client(broker, SECRETS["client id (v3.1.1)"].decode(), version=V311, persistent=True,
                username=SECRETS["username"].decode()) as c:
        c.subscribe(topic, 2)
    # A client with a delayed will that is still connected while we look.
    w = Client(broker, "will-holder", version=V5, persistent=True, session_expiry=3600, will=will)
    with Client(broker, "secret-publisher", username=SECRETS["username"].decode()) as p:
        p.publish_many([(topic, f"{secret_payload}-{i}".encode(), 1) for i in range(20)])
        p.publish(SECRETS["retained topic"].decode(), SECRETS["retained payload"], qos=1, retain=True)
    broker.settle()

    assert leaks(broker) == {}, "plaintext in the database while the broker runs"
    w.disconnect()
    broker.stop()
    assert leaks(broker) == {}, "plaintext in the database after a clean stop"

    # Control: the data really is in there.
    broker.start()
    with Client(broker, SECRETS["client id (v5)"].decode(), version=V5, persistent=True,
                session_expiry=3600, username=SECRETS["username"].decode()) as c:
        assert c.session_present
        msgs = c.collect(20)
    assert [m.payload for m in msgs] == [f"{secret_payload}-{i}".encode() for i in range(20)]
    with Client(broker, "retained-check") as c:
        c.subscribe(SECRETS["retained topic"].decode(), 1)
        assert [m.payload for m in c.collect(1)] == [SECRETS["retained payload"]]


# Mosquitto's store ids: 10 bits of node id, 31 bits of seconds since this
# moment, 23 bits of the fraction of the second (src/database.c).
STORE_ID_EPOCH = 1637168273
SEQ_SHIFT = 40            # a queue entry's sequence number: open epoch << 40 | counter
SEAL_HEADER = 2 + 12      # envelope: version, key id, nonce


def security_table() -> dict[str, str]:
    """docs/security.md, "What the file shows without the key": {each name
    in backticks in a row's first column: the whole row}."""
    text = (REPO / "docs/security.md").read_text()
    heading = "## What the file shows without the key"
    assert heading in text, f"docs/security.md has no section '{heading}'"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for row in re.findall(r"^\| (.+) \|$", section, re.M):
        for name in re.findall(r"`([^`]+)`", row.split(" | ", 1)[0]):
            rows[name] = row
    return rows


def test_file_shows_what_security_md_lists(broker):
    """The table of docs/security.md against a real file (issue 20: the page
    said the epoch was sealed while every queue entry shows it): every
    database of the file has its row; meta holds only the names its row
    gives, and one salt per open; message keys are store ids whose time is
    when the broker stored them; a queue entry starts with the open's epoch
    and the client's message counter, in order; every envelope's nonce
    starts with the epoch of an open."""
    rows = security_table()
    broker.start()
    broker.stop()
    broker.start()
    with Client(broker, "shows-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("shows/t", 1)
    t0 = time.time()
    with Client(broker, "shows-pub") as p:
        p.publish_many([("shows/t", f"m{i}".encode(), 1) for i in range(5)])
        p.publish("shows/r", b"retained", qos=1, retain=True)
    broker.settle()
    t1 = time.time()
    broker.stop()

    dbs = mdb_dump_all(broker.db_dir)
    assert {"meta", "msgs", "queue-log", "queue-index", "sessions", "subs", "retained"} <= set(dbs), sorted(dbs)
    assert not set(dbs) - set(rows), f"databases without a row in docs/security.md: {sorted(set(dbs) - set(rows))}"

    salts = salts_of(dbs)
    assert sorted(salts) == list(range(min(salts), min(salts) + broker.runs)), sorted(salts)
    names = {k.decode() for k, _ in dbs["meta"] if not k.startswith(b"salt")}
    assert names == {n for n in names if f"`{n}`" in rows["meta"]} and "schema" in names, names
    epoch = max(salts)

    stored = [STORE_ID_EPOCH + ((int.from_bytes(k, "big") >> 23) & (2**31 - 1)) for k, _ in dbs["msgs"]]
    assert len(stored) == 6 and all(t0 - 2 <= t <= t1 + 2 for t in stored), (t0, stored, t1)

    # The index: one client, a pair seq | log id per entry; the log: each
    # sealed entry under its log id.
    [(queue, _)] = {k: 0 for k, _ in dbs["queue-index"]}.items()
    pairs = [v for k, v in dbs["queue-index"] if k == queue]
    seqs = [int.from_bytes(v[:8], "big") for v in pairs]
    assert [s >> SEQ_SHIFT for s in seqs] == [epoch] * 5, seqs
    counters = [s & (2**SEQ_SHIFT - 1) for s in seqs]
    assert counters == sorted(counters) and len(set(counters)) == 5, counters
    log_ids = [int.from_bytes(v[8:16], "big") for v in pairs]
    assert [i >> SEQ_SHIFT for i in log_ids] == [epoch] * 5 and log_ids == sorted(log_ids), log_ids
    log = {k: v for k, v in dbs["queue-log"]}
    assert sorted(log) == [i.to_bytes(8, "big") for i in log_ids], sorted(log)

    for name, pairs in dbs.items():
        for k, v in pairs:
            if (name == "meta" and k.startswith(b"salt")) or name == "queue-index":
                continue
            env = v
            assert int.from_bytes(env[2:6], "big") in salts, (name, k.hex(), env[:SEAL_HEADER].hex())
