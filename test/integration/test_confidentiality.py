"""No client id, username, topic, payload or will of a client appears in
the database files in clear."""

from harness import V5, V311, Client

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
