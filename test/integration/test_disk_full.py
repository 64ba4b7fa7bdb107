"""A full device under the database.

While commits fail for lack of space, QoS 1/2 publishes are refused (MQTT 5:
PUBACK 0x97 Quota exceeded; MQTT 3.1.1 has no negative PUBACK, so such a
publisher is disconnected and resends), with a rate-limited warning; QoS 0
traffic to connected subscribers keeps flowing; nothing acknowledged before
is lost; when space returns the broker accepts publishes again by itself.

Two ways to fill the device: the io_fault.so shim (ENOSPC on writes of
data.mdb, works anywhere) and a real tmpfs of a few MiB mounted as the data
directory (needs the right to mount, as in the build root and in CI).
"""

import os
import time


from harness import (QUOTA_EXCEEDED, V5, Acks, Client, assert_sequence, assert_v311_publish_refused, io_fault,
                     numbered_payload, seqs_of, small_filesystem)

def _offline_subscriber(broker):
    with Client(broker, "full-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("full/#", 1)


def _fill_until_refused(pub, topic, first, size, limit=5000):
    """Publishes numbered messages until one is refused: -> accepted numbers."""
    accepted = []
    for seq in range(first, first + limit):
        code = pub.send(topic, numbered_payload(seq, size))
        if code == QUOTA_EXCEEDED:
            return accepted
        assert code < 0x80, f"unexpected reason code {code:#x}"
        accepted.append(seq)
        time.sleep(0.002)
    raise AssertionError(f"no publish was refused after {limit} messages")


def _refused_until_space(pub, topic, seq, size, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = pub.send(topic, numbered_payload(seq, size))
        if code < 0x80:
            return
        assert code == QUOTA_EXCEEDED, f"unexpected reason code {code:#x}"
        time.sleep(0.1)
    raise AssertionError("publishes still refused after space returned")


def _check_after_kill(broker, expected):
    broker.restart("kill")
    c = Client(broker, "full-sub", version=V5, persistent=True, session_expiry=3600)
    assert c.session_present
    assert_sequence(seqs_of(c.collect(len(expected), timeout=20)), expected, "offline queue after the full device")
    c.clear()
    extra = [(m.topic, m.payload[:40]) for m in c.listen(0.5)]
    assert extra == [], f"refused messages were delivered: {extra}"
    c.disconnect()


def test_shim_enospc_refuses_then_recovers(broker, workdir):
    control = io_fault(broker, workdir)
    broker.start()
    _offline_subscriber(broker)
    online = Client(broker, "full-online", version=V5)
    online.subscribe("full/#", 0)
    pub = Acks(Client(broker, "full-pub", version=V5))
    for seq in range(1, 11):
        assert pub.send("full/t", numbered_payload(seq)) == 0
    broker.settle()

    control.write_text("enospc")
    os.chmod(control, 0o644)
    accepted = _fill_until_refused(pub, "full/t", 11, 0)
    assert "is full: refusing QoS 1/2 publishes" in broker.log(), broker.log()
    # QoS 0 still flows to the connected subscriber.
    pub.c.publish("full/q0", b"qos0 while full", qos=0)
    assert [m.payload for m in online.collect(1, topic="full/q0")] == [b"qos0 while full"]
    assert_v311_publish_refused(broker, "full-v3", "full/t")

    control.unlink()
    last = (accepted[-1] if accepted else 10) + 1
    _refused_until_space(pub, "full/t", last, 0)
    pub.c.disconnect()
    online.disconnect()
    _check_after_kill(broker, list(range(1, 11)) + accepted + [last])



def test_real_small_filesystem(broker, workdir):
    with small_filesystem(broker, workdir, "6m") as mnt:
        broker.plugin_opts["db_path"] = str(mnt / "db")
        broker.plugin_opts["map_size"] = "1M"
        broker.plugin_opts["journal_size"] = "256k"
        broker.start()
        _offline_subscriber(broker)
        pub = Acks(Client(broker, "full-pub", version=V5))
        filler = mnt / "filler"
        with open(filler, "wb") as f:
            # Leave about 1 MiB free: LMDB's file grows into it, then fails.
            st = os.statvfs(mnt)
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (1 << 20)))
        accepted = _fill_until_refused(pub, "full/t", 1, 4000)
        assert accepted, "nothing was accepted before the device filled"
        assert "No space left on device" in broker.log() or "is full" in broker.log(), broker.log()

        filler.unlink()
        last = accepted[-1] + 1
        _refused_until_space(pub, "full/t", last, 4000)
        pub.c.disconnect()
        _check_after_kill(broker, accepted + [last])
