"""Valid plugin options: db_path, map_size (and growing past it), sync."""

import pytest

from harness import Client, check_seed, numbered_payload, seed_data


def test_db_path_option(broker):
    """plugin_opt_db_path wins over persistence_location, and works without it."""
    custom = broker.root / "data" / "custom-db"
    broker.plugin_opts["db_path"] = str(custom)
    broker.persistence_location = None
    broker.start()
    seqs = seed_data(broker)
    broker.stop()
    assert (custom / "data.mdb").is_file(), f"no data.mdb in {custom}"
    assert not (broker.data_dir / "persist-lmdb").exists(), "default db_path used despite plugin_opt_db_path"
    broker.start()
    check_seed(broker, seqs)


def test_default_db_path_under_persistence_location(broker):
    broker.start()
    seqs = seed_data(broker)
    broker.stop()
    assert (broker.data_dir / "persist-lmdb" / "data.mdb").is_file()
    broker.start()
    check_seed(broker, seqs)


@pytest.mark.parametrize("value", ["4194304", "2048k", "64M", "1g"])
def test_map_size_values_accepted(broker, value):
    broker.plugin_opts["map_size"] = value
    broker.plugin_opts["sync"] = "tick"
    broker.start()
    seqs = seed_data(broker)
    broker.restart("term")
    check_seed(broker, seqs)


def test_map_grows_past_initial_size(broker):
    """About 3 MiB of retained messages in a 1 MiB initial map."""
    broker.plugin_opts["map_size"] = "1m"
    broker.start()
    count = 300
    with Client(broker, "big-pub") as p:
        p.publish_many([(f"big/{i}", numbered_payload(i, 10_000), 1, True) for i in range(count)])
    broker.settle()
    broker.restart("kill")
    with Client(broker, "big-check") as c:
        c.subscribe("big/#", 1)
        msgs = c.collect(count, quiet=0.5)
    got = {m.topic: m.payload for m in msgs}
    assert len(msgs) == count and len(got) == count
    assert got == {f"big/{i}": numbered_payload(i, 10_000) for i in range(count)}
