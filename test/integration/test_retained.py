"""Retained messages survive restarts; so does their deletion."""

import os

import pytest

from harness import Client

BINARY = bytes(range(256)) * 4


def retained_now(broker, name, count, quiet=1.0):
    """{topic: (payload, qos)} of the retained messages under ret/#, checking
    each arrives once with the retain flag."""
    with Client(broker, name) as c:
        c.subscribe("ret/#", 1)
        if count:
            c.wait_for(count)
        msgs = c.listen(quiet)
    topics = [m.topic for m in msgs]
    assert len(topics) == len(set(topics)), f"a retained message arrived twice: {sorted(topics)}"
    assert all(m.retain for m in msgs), f"retain flag missing: {[m.topic for m in msgs if not m.retain]}"
    return {m.topic: (m.payload, m.qos) for m in msgs}


@pytest.mark.parametrize("how", ["term", "kill"])
def test_retained_messages_and_deletions_survive_restarts(broker, how):
    broker.start()
    with Client(broker, "ret-pub") as p:
        p.publish("ret/a", b"A1", qos=1, retain=True)
        p.publish("ret/a", b"A2", qos=1, retain=True)  # replaces A1
        p.publish("ret/b", BINARY, qos=1, retain=True)
        p.publish("ret/q0", b"zero", qos=0, retain=True)
        p.publish("ret/gone-early", b"G1", qos=1, retain=True)
        p.publish("ret/gone-early", b"", qos=1, retain=True)  # deleted in the same run
        p.publish("ret/gone-later", b"G2", qos=1, retain=True)
    broker.settle()
    broker.restart(how)

    assert retained_now(broker, "ret-check-1", 4) == {
        "ret/a": (b"A2", 1),
        "ret/b": (BINARY, 1),
        "ret/q0": (b"zero", 0),
        "ret/gone-later": (b"G2", 1),
    }

    # Delete a retained message that was restored from the store.
    with Client(broker, "ret-pub") as p:
        p.publish("ret/gone-later", b"", qos=1, retain=True)
        p.publish("ret/a", b"A3", qos=1, retain=True)
    broker.settle()
    broker.restart(how)

    assert retained_now(broker, "ret-check-2", 3) == {
        "ret/a": (b"A3", 1),
        "ret/b": (BINARY, 1),
        "ret/q0": (b"zero", 0),
    }


def test_retained_message_of_a_revoked_publisher_needs_clearing(broker, workdir):
    """Documents a limit (docs/security.md): check_retain_source does not
    keep a restored retained message from new subscribers once its
    publisher has lost write access (Mosquitto treats what a persistence
    plugin restores as its own; the same with persist-sqlite), so revoking
    a publisher does not withdraw what it retained. The remedy the docs
    give, an empty retained message from the operator, removes it for
    good."""
    acl = workdir / "acl"

    def write_acl(pub_access):
        acl.write_text(f"user pub\ntopic {pub_access} status/#\n\nuser reader\ntopic read status/#\n\n"
                       f"user admin\ntopic readwrite status/#\n")
        os.chmod(acl, 0o644)

    def reader_gets(name):
        with Client(broker, name, username="reader") as c:
            c.subscribe("status/#", 1)
            return [m.payload for m in c.listen(0.5) if m.retain]

    write_acl("readwrite")
    broker.extra_conf += [f"acl_file {acl}", "check_retain_source true"]
    broker.start()
    with Client(broker, "pub-1", username="pub") as p:
        p.publish("status/door", b"open", qos=1, retain=True)
    assert reader_gets("r1") == [b"open"]

    # The publisher loses write access; after a restart its message is
    # still served.
    write_acl("read")
    broker.restart()
    assert reader_gets("r2") == [b"open"]

    # The remedy: the operator clears it; it stays cleared.
    with Client(broker, "admin-1", username="admin") as a:
        a.publish("status/door", b"", qos=1, retain=True)
    broker.restart("kill")
    assert reader_gets("r3") == []
