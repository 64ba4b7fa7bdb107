"""No (key, nonce) pair is used twice, whatever happens to the file.

The reproduction of issue 20: stop the broker, back the database up, start
(epoch N+1), publish a secret, stop; restore the backup as
docs/operations.md describes, start (epoch N+1 again), publish a known
payload of the same length. With one key for every open both files held
records sealed under the same key and nonce, and the XOR of the two
ciphertexts with the known payload gave the secret back. Each open now seals
under a key of its own, derived from a random salt (docs/security.md).

The files are read as an attacker reads them: every sealed value of every
database (mdb_dump) and every record of the journal, with the salt the
file keeps for the value's epoch.
"""

import shutil
from collections import defaultdict
from pathlib import Path

from harness import V5, Client, give_to_broker, mdb_dump_all, salts_of

TOPIC = "nonce/t"
SUB = "nonce-sub"
SECRET = b"SECRET-the-launch-code-is-0000-1111-2222-3333-4444-5555-6666-777"
KNOWN = b"K" * len(SECRET)
COPIES = 20              # messages per timeline, each a record in the journal and in msgs
ENVELOPE_V1, ENVELOPE_V2 = 1, 2
SEAL_HEADER, SEAL_TAG = 2 + 12, 16
JOURNAL_HEADER = 4096
JOURNAL_MAGICS = (0x4A524543, 0x4A524532)  # "JREC" (lsn-bound, earlier), "JRE2" (lsn and offset)


def chown_tree(path: Path) -> None:
    give_to_broker(path)
    for p in path.rglob("*"):
        give_to_broker(p)


def sealed_records(db_dir: Path) -> list[tuple[str, bytes, bytes, bytes]]:
    """Every sealed value in data.mdb and in the journal, as
    (where, key identity, nonce, envelope). The key identity is what the
    key of the record depends on besides the master key: the salt of the
    record's epoch for version 2, nothing for version 1."""
    dbs = mdb_dump_all(db_dir)
    salts = salts_of(dbs)
    found = []

    def add(where: str, env: bytes):
        if len(env) < SEAL_HEADER + SEAL_TAG or env[0] not in (ENVELOPE_V1, ENVELOPE_V2):
            return
        nonce = env[2:SEAL_HEADER]
        epoch = int.from_bytes(nonce[:4], "big")
        if env[0] == ENVELOPE_V1:
            ident = b"v1"
        else:
            assert epoch in salts, f"{where}: a record of epoch {epoch}, whose salt the file does not keep"
            ident = b"v2" + salts[epoch]
        found.append((where, ident, nonce, env))

    for name, pairs in dbs.items():
        for k, v in pairs:
            if (name == "meta" and k.startswith(b"salt")) or name == "queue-index":
                continue
            add(f"data.mdb/{name}", v)
    journal = db_dir / "journal"
    if journal.exists():
        data = journal.read_bytes()
        for off in range(JOURNAL_HEADER, len(data) - 16, 16):
            if int.from_bytes(data[off:off + 4], "little") in JOURNAL_MAGICS:
                slen = int.from_bytes(data[off + 4:off + 8], "little")
                if off + 16 + slen <= len(data):
                    add(f"journal@{off}", data[off + 16:off + 16 + slen])
    return found


def publish_copies(broker, payload: bytes) -> None:
    with Client(broker, "nonce-pub") as p:
        p.publish_many([(TOPIC, payload, 1) for _ in range(COPIES)])
    broker.settle()


def restore(backup: Path, db_dir: Path) -> None:
    """docs/operations.md, Restore: the whole directory replaced by the backup."""
    shutil.rmtree(db_dir)
    db_dir.mkdir(mode=0o700)
    shutil.copy2(backup / "data.mdb", db_dir / "data.mdb")
    chown_tree(db_dir)


def test_restored_backup_reuses_no_nonce(broker, workdir):
    broker.start()
    with Client(broker, SUB, version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe(TOPIC, 1)
    broker.stop()
    backup = workdir / "backup"
    backup.mkdir()
    shutil.copy2(broker.data_file, backup / "data.mdb")

    # Timeline A: the live directory goes on, with a secret. Each timeline
    # ends in a kill: a clean stop would empty the journal, whose records
    # are checked too.
    broker.start()
    publish_copies(broker, SECRET)
    broker.kill()
    timeline_a = workdir / "timeline-a"
    shutil.copytree(broker.db_dir, timeline_a)

    # Timeline B: the backup restored, a payload the attacker knows.
    restore(backup, broker.db_dir)
    broker.start()
    publish_copies(broker, KNOWN)
    broker.kill()

    a, b = sealed_records(timeline_a), sealed_records(broker.db_dir)
    assert any(w.startswith("journal") for w, *_ in a) and any(w.startswith("journal") for w, *_ in b), \
        "the journals hold no records: the check would not cover them"
    assert sum(len(e) >= len(SECRET) for *_, e in a) >= COPIES, "the secret messages are not in timeline A"

    # Both timelines started from the same epoch: the nonces do repeat
    # across the two files (the checks below are not vacuous).
    nonces_a = {n for _, _, n, _ in a}
    shared = [r for r in b if r[2] in nonces_a]
    assert len(shared) >= COPIES, f"only {len(shared)} nonces of timeline B are in timeline A too"

    # The attack itself: XOR of two ciphertexts under one nonce, with the
    # known payload, does not give the secret.
    by_nonce = defaultdict(list)
    for _, _, nonce, env in a:
        by_nonce[nonce].append(env)
    target = bytes(x ^ y for x, y in zip(SECRET, KNOWN))
    for _, _, nonce, env_b in b:
        for env_a in by_nonce.get(nonce, []):
            xor = bytes(x ^ y for x, y in zip(env_a[SEAL_HEADER:], env_b[SEAL_HEADER:]))
            assert target not in xor, f"the secret comes back from two records under nonce {nonce.hex()}"

    # And no (key, nonce) pair seals two records, unless it is the same
    # record (one the backup holds, in both files).
    used: dict[tuple[bytes, bytes], tuple[str, bytes]] = {}
    reused = []
    for where, ident, nonce, env in a + b:
        first = used.setdefault((ident, nonce), (where, env))
        if first[1] != env:
            reused.append(f"{first[0]} and {where}: nonce {nonce.hex()}")
    assert not reused, f"{len(reused)} (key, nonce) pairs sealed two different records; first: {reused[:3]}"

    # The restored database works: the subscriber gets timeline B's messages.
    broker.start()
    with Client(broker, SUB, version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        got = c.collect(COPIES)
        assert [m.payload for m in got] == [KNOWN] * COPIES
