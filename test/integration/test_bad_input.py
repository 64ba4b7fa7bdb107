"""Bad keys, damaged data files and bad options: the broker refuses to start
with one clear log line (or, for one damaged record, runs without it), and
committed data is never lost."""

import os
import random

import pytest

from harness import (
    V5, Client, assert_plugin_said, broker_account, check_retained_seed, check_seed, chmod_tree,
    flip_large_record, lmdb_page_size, plugin_lines_with, queue_one_large_message, sanitizer_env, seed_data, seqs_of,
    write_key,
)

# --------------------------------------------------------------------------
# Key file
# --------------------------------------------------------------------------


def test_missing_key_file(broker):
    broker.plugin_opts["key_file"] = str(broker.root / "no-such-key.bin")
    broker.assert_refuses("cannot open key file")


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_key_file_of_wrong_length(broker, length):
    write_key(broker.key_file, os.urandom(length))
    broker.assert_refuses("must hold exactly 32 bytes")


@pytest.mark.parametrize("data,fragment", [
    (bytes(32), "are all 0x00"),
    (b"\xff" * 32, "are all 0xff"),
    (b"9f86d081884c7d659a2feaa0c55ad015", "holds text"),
    (bytes(range(8)) * 4, "only 8 different byte values"),
], ids=["zeros", "ones", "hex-text", "eight-values"])
def test_key_file_not_random(broker, data, fragment):
    """A key that is obviously not random (the broker would seal everything
    under a key anyone can guess) is refused, and nothing is created."""
    write_key(broker.key_file, data)
    line = broker.assert_refuses(fragment)
    assert "head -c 32 /dev/urandom" in line, f"the refusal does not say how to make a key: {line}"
    assert not (broker.db_dir / "data.mdb").exists(), "a refused start created the database"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_key_file_readable_by_others(broker, mode):
    os.chmod(broker.key_file, mode)
    broker.assert_refuses("readable by group or others")


def test_read_only_key_file_is_accepted(broker):
    os.chmod(broker.key_file, 0o400)
    broker.start()
    broker.stop()


def test_wrong_key_refused_then_right_key_works(broker):
    broker.start()
    seqs = seed_data(broker)
    broker.stop()

    other = broker.root / "other-key.bin"
    write_key(other)
    broker.plugin_opts["key_file"] = str(other)
    broker.assert_refuses("does not match this database")

    broker.plugin_opts["key_file"] = str(broker.key_file)
    broker.start()
    check_seed(broker, seqs)


# --------------------------------------------------------------------------
# Damaged data file
# --------------------------------------------------------------------------


def test_structurally_damaged_data_file(broker):
    """Every page but the two LMDB meta pages overwritten (the file keeps
    its size): with zeros, then with random bytes from several seeds. Each
    time the broker must refuse with a clear line, not crash."""
    asan = sanitizer_env(broker.plugin).get("ASAN_OPTIONS")
    if asan:
        # LMDB copying from a damaged page is the fault under test: in an
        # ASan build the checked memcpy/memcmp would end the broker with a
        # report before the signal the plugin catches.
        broker.extra_env["ASAN_OPTIONS"] = asan + ":replace_intrin=0:intercept_memcmp=0"
    broker.start()
    seed_data(broker, count=50)
    broker.stop()
    original = broker.data_file.read_bytes()
    meta = 2 * lmdb_page_size(original)
    n = len(original) - meta
    fills = {"zeros": bytes(n)}
    fills.update({f"random seed {seed}": random.Random(seed).randbytes(n) for seed in range(1, 6)})
    for name, fill in fills.items():
        broker.data_file.write_bytes(original[:meta] + fill)
        try:
            broker.assert_refuses("damaged")
        except AssertionError as e:
            raise AssertionError(f"pages filled with {name}: {e}") from None


def test_one_tampered_record_is_rejected_rest_delivered(broker):
    """One message with a 3000-byte payload lands in an LMDB overflow page
    (everything else is small); one byte of its ciphertext is flipped. The
    broker must start, reject exactly that record, deliver the others."""
    queue_one_large_message(broker, 6, large=4)
    flip_large_record(broker)

    broker.start()
    with Client(broker, "tamper-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        c.wait_for(5)
        msgs = c.listen(1.0)
    assert seqs_of(msgs) == [1, 2, 3, 5, 6], f"got {seqs_of(msgs)}"
    # At start-up, or with queue_storage disk when the queue is handed back.
    rejected = plugin_lines_with(broker.log(), "rejected a")
    assert len(rejected) == 1, f"expected one 'rejected a' line, got {rejected}; log:\n{broker.log()}"
    assert "msg" in rejected[0].lower(), f"rejection line does not name the msgs record kind: {rejected[0]}"


# --------------------------------------------------------------------------
# Read-only database
# --------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0 and broker_account() is None,
                    reason="running as root without a mosquitto user: permission bits would not apply")
def test_read_only_database_loses_nothing(broker):
    broker.start()
    seqs = seed_data(broker)
    broker.stop()

    db = broker.db_dir
    modes = {p: p.stat().st_mode & 0o7777 for p in [db, *db.iterdir()]}
    chmod_tree(db, 0o555, 0o444)
    try:
        try:
            broker.start()
            refused = False
        except AssertionError:
            refused = True
        if refused:
            assert broker.proc.returncode != 0
            assert_plugin_said(broker.log(), "read-only", "permission denied")
        else:
            # Running on a read-only database: it must at least serve the data.
            check_retained_seed(broker)
            broker.stop()
    finally:
        for p, m in modes.items():
            os.chmod(p, m)

    broker.start()
    check_seed(broker, seqs)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["frobnicate", "dbpath", "key"])
def test_unknown_option_refused(broker, key):
    broker.plugin_opts[key] = "1"
    broker.assert_refuses(f"unknown option plugin_opt_{key}")


@pytest.mark.parametrize("key,value", [
    ("map_size", "banana"),
    ("map_size", "12q"),
    ("map_size", "-5"),
    ("map_size", "99999999999999999999999"),
    ("sync", "sometimes"),
    ("max_db_size", "512k"),
    ("max_queued_messages", "-1"),
    ("max_queued_bytes", "lots"),
    ("queue_full", "drop-random"),
    ("offline_ttl", "3651d"),
    ("queue_storage", "ssd"),
    ("queue_window", "10"),
])
def test_malformed_option_value_refused(broker, key, value):
    broker.plugin_opts[key] = value
    broker.assert_refuses(f"plugin_opt_{key}")


def test_no_db_path_and_no_persistence_location_refused(broker):
    broker.persistence_location = None
    log = broker.wait_refused()
    assert broker.plugin_lines(), f"no persist-lmdb: line explains the refusal; log:\n{log}"
