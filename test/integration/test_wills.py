"""Delayed wills survive a restart.

On a clean shutdown Mosquitto publishes every pending delayed will itself,
so only kill -9 shows that the plugin restored a will: after it, the will
must still be published (at the latest when the 5 s session ends). Both
ways, it must be published exactly once.
"""

import time

import pytest

from harness import V5, Client

SESSION_EXPIRY = 5
WILL_DELAY = 3
WILL = {"topic": "will/t", "payload": b"gone-away", "qos": 1, "delay": WILL_DELAY}


def watcher(broker):
    """Persistent MQTT 5 subscriber to the will topic (so a will sent while
    it is away is queued for it)."""
    return Client(broker, "will-watcher", version=V5, persistent=True, session_expiry=300)


def will_client(broker):
    return Client(broker, "will-client", version=V5, persistent=True,
                  session_expiry=SESSION_EXPIRY, will=WILL)


def lose_will_client(broker):
    """Connects the will client, drops its connection abnormally, makes sure
    the broker has noticed and committed, returns the time of the drop."""
    c = will_client(broker)
    broker.settle()
    c.drop()
    dropped = time.monotonic()
    broker.settle()
    return dropped


@pytest.mark.parametrize("how", ["kill", "term"])
def test_delayed_will_published_after_restart(broker, how):
    broker.start()
    with watcher(broker) as w:
        w.subscribe("will/t", 1)
    dropped = lose_will_client(broker)

    broker.restart(how)
    assert time.monotonic() - dropped < WILL_DELAY, "restart took longer than the will delay"

    with watcher(broker) as w:
        assert w.session_present
        w.wait_for(1, timeout=SESSION_EXPIRY + WILL_DELAY + 15)
        # Stay until well after the session would have ended, to catch a second copy.
        msgs = w.listen(max(1.0, dropped + SESSION_EXPIRY + 2 - time.monotonic()))
    assert [(m.topic, m.payload) for m in msgs] == [("will/t", b"gone-away")], msgs


def test_reconnect_before_delay_cancels_restored_will(broker):
    broker.start()
    with watcher(broker) as w:
        w.subscribe("will/t", 1)
    dropped = lose_will_client(broker)

    broker.restart("kill")
    # The client comes back (without a will) before the delay ends.
    back = Client(broker, "will-client", version=V5, persistent=True, session_expiry=SESSION_EXPIRY)
    assert time.monotonic() - dropped < WILL_DELAY, "restart and reconnect took longer than the will delay"
    assert back.session_present, "will client's session not restored"
    with watcher(broker) as w:
        msgs = w.listen(max(1.0, dropped + SESSION_EXPIRY + 2 - time.monotonic()))
    back.disconnect()
    assert msgs == [], f"will published although its client reconnected in time: {msgs}"


@pytest.mark.parametrize("delay", [0, 1])
def test_published_will_is_not_published_again_after_restart(broker, delay):
    """A will the broker has already published (at once, or after its delay)
    must not come back from the store after a restart."""
    broker.start()
    w = watcher(broker)
    w.subscribe("will/t", 1)
    c = Client(broker, "will-client", version=V5, persistent=True, session_expiry=3,
               will={**WILL, "delay": delay})
    broker.settle()
    c.drop()
    dropped = time.monotonic()
    w.wait_for(1, timeout=delay + 15)
    w.disconnect()
    broker.settle()

    broker.restart("kill")
    with watcher(broker) as w:
        assert w.session_present
        # Past the end of the will client's session, when a restored will would go out.
        msgs = w.listen(max(1.0, dropped + 3 + 2 - time.monotonic()))
    assert msgs == [], f"will published a second time after the restart: {msgs}"
