"""Clients that are connected when the broker is killed.

While a client stays connected the broker reports no change of its session,
so the stored session still carries the expiry time of its last disconnect.
After a crash the plugin must count the session's expiry from the restart,
and publish the will of a client whose connection the crash cut (its will
was due: the connection ended without DISCONNECT)."""

import time

from harness import V311, V5, Client, seqs_of, assert_sequence


def test_long_connected_session_survives_kill(broker):
    """Connected for longer than its session expiry since its last
    disconnect, killed: the session and its queue are still there."""
    broker.start()
    c = Client(broker, "long-lived", version=V5, persistent=True, session_expiry=2)
    c.subscribe("ll/#", 1)
    c.disconnect()
    c = Client(broker, "long-lived", version=V5, persistent=True, session_expiry=2)
    assert c.session_present
    time.sleep(3)  # longer than the expiry counted from the last disconnect
    broker.settle()
    broker.restart("kill")
    # Messages for the (now offline) session after the restart are queued.
    with Client(broker, "pub", version=V5) as p:
        p.publish_numbered("ll/x", range(1, 6))
    c2 = Client(broker, "long-lived", version=V5, persistent=True, session_expiry=2)
    assert c2.session_present, "the session of a connected client expired across the crash"
    assert_sequence(seqs_of(c2.collect(5)), [1, 2, 3, 4, 5])
    c2.disconnect()


def test_session_still_expires_after_restart(broker):
    """The control: a session that went offline keeps its expiry time."""
    broker.start()
    c = Client(broker, "short", version=V5, persistent=True, session_expiry=2)
    c.subscribe("s/#", 1)
    c.disconnect()
    broker.settle()
    broker.restart("kill")
    time.sleep(3)
    c2 = Client(broker, "short", version=V5, persistent=True, session_expiry=2)
    assert not c2.session_present
    c2.disconnect()


def will_watcher(broker):
    return Client(broker, "crash-watcher", version=V5, persistent=True, session_expiry=300)


def test_will_of_connected_client_published_after_kill(broker):
    """Persistent session, no will delay, connected at the crash: its will is
    published once after the restart."""
    broker.start()
    w = will_watcher(broker)
    w.subscribe("crash/will", 1)
    w.disconnect()
    c = Client(broker, "crash-victim", version=V5, persistent=True, session_expiry=60,
               will={"topic": "crash/will", "payload": b"cut-off", "qos": 1})
    broker.settle()
    broker.restart("kill")
    del c
    with will_watcher(broker) as w:
        w.wait_for(1, timeout=10)
        msgs = w.listen(2.0)
        assert [m.payload for m in msgs] == [b"cut-off"], "the will was not published exactly once"
    broker.restart("kill")
    with will_watcher(broker) as w:
        assert w.listen(2.0) == [], "the will came back after a second restart"


def test_will_of_clean_session_client_published_after_kill(broker):
    """A clean-session (3.1.1) client has no session to restore, but its will
    was stored while it was connected: published after the restart."""
    broker.start()
    w = will_watcher(broker)
    w.subscribe("crash/will", 1)
    w.disconnect()
    c = Client(broker, "clean-victim", version=V311, persistent=False,
               will={"topic": "crash/will", "payload": b"clean-cut", "qos": 1})
    broker.settle()
    broker.restart("kill")
    del c
    with will_watcher(broker) as w:
        w.wait_for(1, timeout=10)
        msgs = w.listen(1.5)
        assert [m.payload for m in msgs] == [b"clean-cut"], "the will was not published exactly once"


def test_will_of_clean_disconnect_not_published(broker):
    """The control: a client that disconnected cleanly leaves no will."""
    broker.start()
    w = will_watcher(broker)
    w.subscribe("crash/will", 1)
    w.disconnect()
    c = Client(broker, "polite", version=V5, persistent=True, session_expiry=60,
               will={"topic": "crash/will", "payload": b"never", "qos": 1})
    c.disconnect()
    broker.settle()
    broker.restart("kill")
    with will_watcher(broker) as w:
        assert w.listen(2.0) == []
