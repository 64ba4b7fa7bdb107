"""Every refusal at start-up is exact: each check below is tried on a real
damaged directory, where the broker must refuse with a clear line, and on a
real legitimate one that LMDB or a crash leaves, where it must start and
serve everything. With plugin_opt_on_damage quarantine a damaged database
is moved aside and the broker starts on a new one.

The first legitimate directory comes from outside the project: a kill -9
under `plugin_opt_sync publish` left data.mdb shorter than the pages its meta
page counts (LMDB's loose pages, never written; test/fixtures/README.md)."""

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import (
    Client, REPO, V5, assert_sequence, check_seed, control_stats, give_to_broker, io_fault,
    lmdb_page_size, plugin_lines_with, run_cli, seed_data, seqs_of,
)

FIXTURE = REPO / "test" / "fixtures" / "kill9-unwritten-tail-pages.tar.gz"
FIXTURE_ACKED = range(0, 138)  # pub.txt: 138 messages acknowledged, numbered 0..137


def chown_tree(path: Path) -> None:
    give_to_broker(path)
    for p in path.rglob("*"):
        give_to_broker(p)


def use_fixture(broker, workdir: Path) -> Path:
    with tarfile.open(FIXTURE) as t:
        t.extractall(workdir / "fx", filter="data")
    fx = workdir / "fx"
    chown_tree(fx)
    os.chmod(fx / "key", 0o600)
    broker.key_file = fx / "key"
    broker.plugin_opts["key_file"] = str(fx / "key")
    broker.plugin_opts["db_path"] = str(fx / "data" / "lmdb")
    return fx


def fixture_number(payload: bytes) -> int:
    return int(payload[:12].decode().strip().strip("#").split("#")[0])


def assert_fixture_delivered(broker) -> None:
    for name in ("s1", "s2", "s3"):
        with Client(broker, name, version=V5, persistent=True, session_expiry=3600) as c:
            assert c.session_present, f"{name}: session lost"
            c.wait_for(len(FIXTURE_ACKED))
            got = [fixture_number(m.payload) for m in c.listen(0.5)]
        # Message 138 was sent but never acknowledged: it may come or not.
        if got and got[-1] == 138:
            got.pop()
        assert_sequence(got, list(FIXTURE_ACKED), f"{name} after the restart")


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_unwritten_tail_pages_start_and_deliver(broker, workdir, storage):
    fx = use_fixture(broker, workdir)
    data = (fx / "data" / "lmdb" / "data.mdb").read_bytes()
    assert len(data) == 917504, "the fixture changed"
    broker.plugin_opts["queue_storage"] = storage
    broker.start()
    assert not plugin_lines_with(broker.log(), "refusing"), broker.log()
    assert_fixture_delivered(broker)
    broker.stop()
    run_cli(broker, "verify", check=True)


def test_truncation_into_live_pages_refused(broker):
    """The damaged counterpart: the file cut where trees still reach."""
    broker.start()
    seed_data(broker, count=50)
    broker.stop()
    size = broker.data_file.stat().st_size
    page = lmdb_page_size(broker.data_file.read_bytes())
    assert size >= 8 * page, f"data file unexpectedly small: {size} bytes"
    os.truncate(broker.data_file, size // 2 // page * page)
    line = broker.assert_refuses("truncated")
    assert "salvage" in line and "on_damage" in line, line


def test_empty_data_file_alone_is_a_creation_cut_short(broker):
    """LMDB writes a new file's meta pages first, and the journal comes
    after the first commit: an empty data file with no journal is a first
    start killed while creating it."""
    broker.db_dir.mkdir(parents=True)
    give_to_broker(broker.db_dir)
    broker.data_file.write_bytes(b"")
    give_to_broker(broker.data_file)
    broker.start()
    seqs = seed_data(broker)
    broker.restart("kill")
    check_seed(broker, seqs)


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_data_file_lost_beside_its_journal_refused(broker, how):
    broker.start()
    seed_data(broker)
    broker.stop()
    if how == "emptied":
        os.truncate(broker.data_file, 0)
        broker.assert_refuses("is empty (0 bytes), but the journal")
    else:
        broker.data_file.unlink()
        broker.assert_refuses("is missing, but the journal")


def test_unfinished_journal_creation_is_ignored(broker):
    """The journal is made under a temporary name and renamed into place:
    a leftover journal.new is a creation cut short, not damage."""
    broker.start()
    seqs = seed_data(broker)
    broker.stop()
    (broker.db_dir / "journal.new").write_bytes(b"PLMDB-J1" + bytes(100))
    broker.start()
    check_seed(broker, seqs)


def test_clean_stop_empties_the_journal(broker):
    """A clean stop cuts the journal down to its 4 KiB header: nothing in
    it is needed once the database is on the disk, and what is left of the
    data directory is the database. The next start makes it whole again and
    numbers its records on from the database's mark: publishes acknowledged
    from that journal alone survive a kill -9. The CLI reads the emptied
    journal as one with nothing to apply."""
    broker.start()
    seqs = seed_data(broker)
    broker.stop()
    journal = broker.db_dir / "journal"
    assert journal.stat().st_size == 4096
    r = run_cli(broker, "verify", check=True)
    assert re.search(r"journal records to apply\s+0\b", r.stdout), r.stdout

    broker.plugin_opts["commit_interval_ms"] = "10000"
    broker.start()
    assert journal.stat().st_size == 16 << 20
    with Client(broker, "seed-pub") as p:
        p.publish_numbered("seed/q", [6, 7, 8])
    broker.kill()
    r = run_cli(broker, "verify")
    pending = int(re.search(r"journal records to apply\s+(\d+)", r.stdout).group(1))
    assert pending >= 3, r.stdout
    broker.start()
    check_seed(broker, seqs + [6, 7, 8])


def test_journal_that_is_not_one_refused(broker):
    broker.start()
    seed_data(broker)
    broker.stop()
    j = broker.db_dir / "journal"
    data = bytearray(j.read_bytes())
    data[0:8] = b"NOTAJRNL"
    j.write_bytes(bytes(data))
    broker.assert_refuses("is not a persist-lmdb journal")


def mdb_tool(*args, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(list(args), input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, f"{args}: {r.stderr.decode()}"
    return r.stdout


def test_database_list_naming_an_unknown_database_refused(broker):
    """A page of the main database read as a list of databases this plugin
    never creates: LMDB would rewrite it at the first open for writing."""
    broker.start()
    seed_data(broker)
    broker.stop()
    mdb_tool("mdb_load", "-s", "not-ours", str(broker.db_dir),
             stdin=b"VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n 6b\n 76\nDATA=END\n")
    broker.assert_refuses("lists a database this plugin never creates")


def test_records_without_a_key_check_refused(broker):
    """A database whose records carry no key check is not one this plugin
    wrote (its first transaction writes both)."""
    broker.db_dir.mkdir(parents=True)
    give_to_broker(broker.db_dir)
    mdb_tool("mdb_load", "-s", "sessions", str(broker.db_dir),
             stdin=b"VERSION=3\nformat=bytevalue\ntype=btree\nHEADER=END\n 6b\n 76\nDATA=END\n")
    chown_tree(broker.db_dir)
    broker.assert_refuses("has records but no key check")


def tamper_meta(broker, name: bytes) -> None:
    """Flips a ciphertext byte of one sealed meta record (mdb_dump, mdb_load)."""
    dump = mdb_tool("mdb_dump", "-s", "meta", str(broker.db_dir)).decode().splitlines()
    out, hit = [], False
    for i, line in enumerate(dump):
        if i > 0 and dump[i - 1].strip() == name.hex() and line.startswith(" ") and not hit:
            v = bytearray(bytes.fromhex(line.strip()))
            v[-20] ^= 0x01
            line = " " + v.hex()
            hit = True
        out.append(line)
    assert hit, f"no meta record {name!r} in the dump"
    mdb_tool("mdb_load", "-s", "meta", str(broker.db_dir), stdin=("\n".join(out) + "\n").encode())


@pytest.mark.parametrize("record,said", [(b"epoch", "epoch record"), (b"schema", "schema record")])
def test_damaged_meta_record_refused(broker, record, said):
    broker.start()
    seed_data(broker)
    broker.stop()
    tamper_meta(broker, record)
    broker.assert_refuses(said)


# --------------------------------------------------------------------------
# plugin_opt_on_damage
# --------------------------------------------------------------------------


def test_on_damage_quarantine_moves_aside_and_starts_empty(broker):
    broker.start()
    seed_data(broker, count=50)
    broker.stop()
    size = broker.data_file.stat().st_size
    page = lmdb_page_size(broker.data_file.read_bytes())
    os.truncate(broker.data_file, size // 2 // page * page)
    damaged = broker.data_file.read_bytes()

    broker.plugin_opts["on_damage"] = "quarantine"
    broker.start()
    line = plugin_lines_with(broker.log(), "DATABASE QUARANTINED")
    assert len(line) == 1 and "truncated" in line[0] and "salvage" in line[0], broker.log()
    aside = [p for p in broker.db_dir.parent.iterdir() if p.name.startswith(broker.db_dir.name + ".damaged-")]
    assert len(aside) == 1, aside
    assert (aside[0] / "data.mdb").read_bytes() == damaged, "the damaged file must be kept as it was"
    stats = control_stats(broker)
    assert stats["quarantinedDatabase"] == str(aside[0]) and stats["sessions"] == 0, stats
    with Client(broker, "seed-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert not c.session_present
    broker.stop()

    # The next start opens the new database: nothing more is set aside.
    broker.start()
    assert not plugin_lines_with(broker.log(), "QUARANTINED")
    assert control_stats(broker)["quarantinedDatabase"] is None


def test_on_damage_quarantine_never_applies_to_a_wrong_key(broker):
    broker.start()
    seed_data(broker)
    broker.stop()
    broker.plugin_opts["on_damage"] = "quarantine"
    other = broker.root / "other-key.bin"
    other.write_bytes(os.urandom(32))
    give_to_broker(other)
    os.chmod(other, 0o600)
    broker.plugin_opts["key_file"] = str(other)
    broker.assert_refuses("does not match this database")
    assert not [p for p in broker.db_dir.parent.iterdir() if ".damaged-" in p.name]


def test_on_damage_bad_value_refused(broker):
    broker.plugin_opts["on_damage"] = "ignore"
    broker.assert_refuses("plugin_opt_on_damage 'ignore' is not refuse or quarantine")


# --------------------------------------------------------------------------
# persist-lmdb salvage
# --------------------------------------------------------------------------


def salvage(broker, src: Path, dst: Path) -> subprocess.CompletedProcess:
    return run_cli(broker, "salvage", dst, db=src)


def cli(broker, db: Path, *args) -> subprocess.CompletedProcess:
    return run_cli(broker, *args, db=db)


def epoch_of(broker, db: Path) -> int:
    r = cli(broker, db, "stats")
    assert r.returncode == 0, r.stdout + r.stderr
    return int(re.search(r"^epoch\s+(\d+)", r.stdout, re.M).group(1))


def use_db(broker, db: Path) -> None:
    chown_tree(db)
    broker.plugin_opts["db_path"] = str(db)


def test_salvage_of_an_undamaged_database_copies_everything(broker, workdir):
    broker.start()
    seqs = seed_data(broker, count=30)
    broker.stop()
    src = broker.db_dir
    dst = workdir / "salvaged"
    r = salvage(broker, src, dst)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "30 copied" in r.stdout and "that did not authenticate" not in r.stdout, r.stdout
    # Never a nonce of the old file again under the same key.
    assert epoch_of(broker, dst) > epoch_of(broker, src)
    assert cli(broker, dst, "verify").returncode == 0
    use_db(broker, dst)
    broker.start()
    check_seed(broker, seqs)


def test_salvage_of_the_unwritten_tail_fixture(broker, workdir):
    fx = use_fixture(broker, workdir)
    dst = workdir / "salvaged"
    r = salvage(broker, fx / "data" / "lmdb", dst)
    assert r.returncode == 0, r.stdout + r.stderr
    use_db(broker, dst)
    broker.start()
    assert_fixture_delivered(broker)


def overwrite_page(path: Path, pgno: int, fill: bytes) -> None:
    data = bytearray(path.read_bytes())
    ps = lmdb_page_size(bytes(data))
    data[pgno * ps:(pgno + 1) * ps] = (fill * ps)[:ps]
    path.write_bytes(bytes(data))


def leaf_pages(path: Path, key_size: int = 0) -> list[int]:
    """The leaf pages; with key_size, those whose first node has a key of
    that size (8: message bodies and the queue log, which salvage reads;
    not the queue index, whose 16-byte keys it rebuilds)."""
    data = path.read_bytes()
    ps = lmdb_page_size(data)

    def first_key_size(i: int) -> int:
        node = int.from_bytes(data[i * ps + 16:i * ps + 18], "little")
        return int.from_bytes(data[i * ps + node + 6:i * ps + node + 8], "little")

    return [i for i in range(2, len(data) // ps)
            if int.from_bytes(data[i * ps + 10:i * ps + 12], "little") & 0x02
            and (not key_size or first_key_size(i) == key_size)]


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_salvage_of_a_damaged_database_keeps_what_authenticates(broker, workdir, storage):
    """Several sessions with their queues, then one leaf page zeroed and one
    sealed value flipped: the broker refuses the file; salvage copies the
    rest, says what it left out, and the broker serves what was copied. With
    the queues on disk too: found by a hand-back, the damaged page would
    stop the running broker (LMDB aborts), and every start after."""
    broker.plugin_opts["queue_storage"] = storage
    broker.start()
    names = [f"dmg-{i}" for i in range(40)]
    for n in names:
        with Client(broker, n, version=V5, persistent=True, session_expiry=3600) as c:
            c.subscribe(f"dmg/{n}", 1)
    with Client(broker, "dmg-pub", version=V5) as p:
        for n in names:
            p.publish_numbered(f"dmg/{n}", range(1, 21))
    broker.settle()
    broker.stop()
    src = broker.db_dir
    # Without free pages, every leaf page is one the trees reach.
    assert cli(broker, src, "compact").returncode == 0
    chown_tree(src)
    before = cli(broker, src, "export")
    assert before.returncode == 0
    queued_before = before.stdout.count('"kind":"queue"')
    assert queued_before == 40 * 20, queued_before

    leaves = leaf_pages(broker.data_file, 8)
    overwrite_page(broker.data_file, leaves[len(leaves) // 2], b"\x00")
    broker.assert_refuses("damaged", "truncated")

    dst = workdir / "salvaged"
    r = salvage(broker, src, dst)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "damaged:" in r.stdout or "left out" in r.stdout, r.stdout
    # A clean stop left the journal empty: nothing of it to keep.
    assert "journal: not kept" in r.stdout and not (dst / "journal").exists(), r.stdout
    assert epoch_of(broker, dst) > 1
    v = cli(broker, dst, "verify")
    assert v.returncode == 0, v.stdout + v.stderr
    after = cli(broker, dst, "export")
    queued_after = after.stdout.count('"kind":"queue"')
    assert 0 < queued_after <= queued_before, (queued_after, r.stdout)

    use_db(broker, dst)
    broker.start()
    delivered = 0
    for n in names:
        with Client(broker, n, version=V5, persistent=True, session_expiry=3600) as c:
            if not c.session_present:
                continue
            got = seqs_of(c.listen(0.3))
            # What a session still has is an unbroken run of its queue, in order.
            assert_sequence(got, sorted(set(got)), n)
            delivered += len(got)
    assert delivered == queued_after, (delivered, queued_after)


def test_salvage_keeps_the_journal_records(broker, workdir):
    """What the broker acknowledged but never committed (its commits failed,
    then kill -9) is in the journal: salvage copies the journal, and the
    salts that open its records (each open seals under its own key), and
    the broker on the salvaged database delivers every message, in order."""
    control = io_fault(broker, workdir)
    broker.start()
    with Client(broker, "sj-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("sj/t", 1)
    with Client(broker, "sj-pub", version=V5) as p:
        p.publish_numbered("sj/t", range(1, 11))
        broker.settle()
        control.write_text("eio")
        p.publish_numbered("sj/t", range(11, 31))  # acknowledged; every commit fails
    broker.kill()
    control.unlink()

    dst = workdir / "salvaged"
    r = salvage(broker, broker.db_dir, dst)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "journal: kept" in r.stdout, r.stdout
    use_db(broker, dst)
    broker.extra_env = {}
    broker.start()
    assert "cut short" not in broker.log(), broker.log()[-2000:]
    with Client(broker, "sj-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(30)), list(range(1, 31)), "messages after the salvage")


def test_salvage_refuses_a_target_that_holds_something(broker, workdir):
    broker.start()
    seed_data(broker)
    broker.stop()
    dst = workdir / "busy"
    dst.mkdir()
    (dst / "x").write_text("x")
    r = salvage(broker, broker.db_dir, dst)
    assert r.returncode == 2 and "not an empty directory" in r.stderr, r.stdout + r.stderr
    assert (dst / "x").read_text() == "x"
