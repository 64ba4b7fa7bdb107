"""MQTT 5 subscription identifiers, no-local and retain-as-published
survive a restart, for queued and for live messages."""

import pytest

from harness import V5, Client, numbered_payload


def sub_client(broker):
    return Client(broker, "opts-sub", version=V5, persistent=True, session_expiry=300)


@pytest.mark.parametrize("how", ["term", "kill"])
def test_subscription_options_survive_restart(broker, how):
    broker.start()
    with sub_client(broker) as s:
        s.subscribe("sid/#", 1, sub_id=42)
        s.subscribe("nl/t", 1, sub_id=7, no_local=True)
        s.subscribe("rap/t", 1, sub_id=9, retain_as_published=True)
        s.subscribe("norap/t", 1)  # control: retain flag cleared on live delivery
    with Client(broker, "opts-pub") as p:
        p.publish("sid/queued", numbered_payload(1), qos=1)  # queued while away
    broker.settle()

    broker.restart(how)

    s = sub_client(broker)
    try:
        assert s.session_present, "session not restored"
        queued = s.collect(1)
        assert [(m.topic, m.seq, m.sub_ids) for m in queued] == [("sid/queued", 1, [42])], \
            "queued message lost its subscription identifier"
        s.clear()

        with Client(broker, "opts-pub") as p:
            p.publish("sid/live", numbered_payload(2), qos=1)
            s.publish("nl/t", numbered_payload(3), qos=1)  # its own: not delivered to it
            p.publish("nl/t", numbered_payload(4), qos=1)
            p.publish("rap/t", numbered_payload(5), qos=1, retain=True)
            p.publish("norap/t", numbered_payload(6), qos=1, retain=True)
            msgs = s.collect(4)
        got = [(m.topic, m.seq, m.sub_ids, m.retain) for m in msgs]
        assert sorted(got) == sorted([
            ("sid/live", 2, [42], False),
            ("nl/t", 4, [7], False),
            ("rap/t", 5, [9], True),
            ("norap/t", 6, [], False),
        ]), got
    finally:
        s.disconnect()
