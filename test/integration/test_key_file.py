"""The key file removed or replaced while the broker runs.

The key is read once, at start-up, and kept only as derived subkeys in
memory: the running broker goes on sealing and serving with it. The change
shows at the next start, which refuses with a clear line and writes nothing;
with the right key back, everything is there.
"""

import hashlib

from harness import V5, Client, assert_sequence, seqs_of, write_key


def _offline_queue(broker, seqs):
    with Client(broker, "key-pub") as p:
        p.publish_numbered("key/t", seqs)
    broker.settle()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _restart_refused_then_ok(broker, saved, fragment):
    broker.stop()
    before = _digest(broker.data_file)
    broker.assert_refuses(fragment)
    assert _digest(broker.data_file) == before, "a refused start changed the data file"
    write_key(broker.key_file, saved)
    broker.start()
    c = Client(broker, "key-sub", version=V5, persistent=True, session_expiry=3600)
    assert c.session_present
    assert_sequence(seqs_of(c.collect(20)), list(range(1, 21)), "queue after the key came back")
    c.disconnect()


def test_key_file_removed_while_running(broker):
    broker.start()
    with Client(broker, "key-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("key/#", 1)
    saved = broker.key_file.read_bytes()
    _offline_queue(broker, range(1, 11))
    broker.key_file.unlink()
    _offline_queue(broker, range(11, 21))   # sealed with the key in memory
    _restart_refused_then_ok(broker, saved, "cannot open key file")


def test_key_file_replaced_while_running(broker):
    broker.start()
    with Client(broker, "key-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("key/#", 1)
    saved = broker.key_file.read_bytes()
    _offline_queue(broker, range(1, 11))
    broker.key_file.unlink()
    write_key(broker.key_file)
    _offline_queue(broker, range(11, 21))
    _restart_refused_then_ok(broker, saved, "does not match this database")
