"""The bounded part of the kill -9 campaign (campaign.py): every workload in
every sync mode, a few seeded kills each. Nothing refused at a restart,
`verify` clean after every kill, nothing acknowledged lost, nothing
reordered, no QoS 2 duplicate.

Environment: PERSIST_LMDB_CAMPAIGN_KILLS (per workload and mode, default 2),
PERSIST_LMDB_CAMPAIGN_SEED. scripts/crash-campaign runs the long version."""

import os

import pytest

from campaign import MODES, WORKLOADS, run

KILLS = int(os.environ.get("PERSIST_LMDB_CAMPAIGN_KILLS") or 2)
SEED = int(os.environ.get("PERSIST_LMDB_CAMPAIGN_SEED") or 20261207)


def _check(broker, workload, mode):
    result = run(broker, workload, mode, KILLS, SEED)
    c = result["counts"]
    print(f"{workload} {mode}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    assert not result["findings"], (
        f"seed {SEED} (PERSIST_LMDB_CAMPAIGN_SEED), {workload} in {mode} mode: "
        + "\n".join(result["findings"][:20]) + f"\n{c}")
    assert c["refused_restarts"] == 0 and c["verify_failures"] == 0
    if workload != "retained":
        assert c["acked"] > 0 and c["lost"] == 0 and c["reordered"] == 0 and c["qos2_duplicates"] == 0, c


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_campaign(broker, workload, mode):
    _check(broker, workload, mode)


@pytest.mark.parametrize("mode", ["publish", "tick"])
@pytest.mark.parametrize("workload", ["fanout", "faults"])
def test_campaign_queues_in_memory(broker, workload, mode):
    """The same subscribers and faulty links with queue_storage memory:
    the broker holds every queue, and a restart hands them all over."""
    broker.plugin_opts["queue_storage"] = "memory"
    _check(broker, workload, mode)
