"""Write and sync errors on the data file (an LD_PRELOAD shim, built as
io_fault.so, fails writes of data.mdb while a control file says so).

While the disk fails with EIO, the broker keeps serving: publishers are
acknowledged and online subscribers get their messages; the plugin logs the
failed commits and keeps the changes in memory (the journal holds what was
acknowledged). When the disk recovers, the kept changes are committed: after
a kill -9 an offline subscriber receives everything, in order.

A full device (ENOSPC) is different: what is accepted could not be kept, so
QoS 1/2 publishes are refused until a commit succeeds again
(test_disk_full.py, with the shim here and with a real small file system)."""

import os

import pytest

from harness import V5, Client, assert_sequence, io_fault, seqs_of


@pytest.mark.parametrize("fault", ["eio"])
def test_commit_errors_lose_nothing(broker, workdir, fault):
    control = io_fault(broker, workdir)
    broker.start()

    offline = Client(broker, "offline-sub", version=V5, persistent=True, session_expiry=3600)
    offline.subscribe("f/#", 1)
    offline.disconnect()
    online = Client(broker, "online-sub", version=V5)
    online.subscribe("f/#", 1)
    pub = Client(broker, "pub", version=V5)

    pub.publish_numbered("f/t", range(1, 11))
    broker.settle()

    control.write_text(fault)
    os.chmod(control, 0o644)
    pub.publish_numbered("f/t", range(11, 31))  # acknowledged while the disk fails
    assert_sequence(seqs_of(online.collect(30, timeout=20)), list(range(1, 31)), "online delivery during the fault")
    broker.settle()
    assert "commit to" in broker.log() and "failed" in broker.log(), "the failed commits were not logged"

    control.unlink()
    pub.publish_numbered("f/t", range(31, 41))
    broker.settle()
    broker.settle()
    pub.disconnect()
    online.disconnect()

    broker.restart("kill")
    c = Client(broker, "offline-sub", version=V5, persistent=True, session_expiry=3600)
    assert c.session_present
    assert_sequence(seqs_of(c.collect(40, timeout=20)), list(range(1, 41)), "offline queue after the fault")
    c.disconnect()
