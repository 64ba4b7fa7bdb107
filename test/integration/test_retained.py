"""Retained messages survive restarts; so does their deletion."""

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
