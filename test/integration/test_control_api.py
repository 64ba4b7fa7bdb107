"""Account deletion and the admin API on $CONTROL/persist-lmdb/v1.

The chat scenario of the issue: alice (two devices, one username), bob and
carol keep persistent sessions on the group topic groups/g1/# and on their
personal users/<name>/#; retained messages on both kinds of topic; everyone
offline; group and personal messages published; alice deleted while offline
(through the API with the broker running, or through the CLI with it
stopped). After a restart alice is gone, in the broker and in the file, and
the group and its other members are intact."""

import json
import os
import time


from harness import Client, V5, assert_sequence, run_cli, seqs_of

CONTROL = "$CONTROL/persist-lmdb/v1"
RESPONSE = CONTROL + "/response"
PERSONAL = "users/%u/# inbox/%c/#"
MEMBERS = {  # client id -> username
    "alice-phone": "alice",
    "alice-laptop": "alice",
    "bob-phone": "bob",
    "carol-phone": "carol",
}
GROUP_MSGS = 30
# What each member has queued: the group's retained info and its own
# retained profile (published after it subscribed), the chat, one private.
QUEUED = GROUP_MSGS + 3


def member(broker, clientid, session_expiry=3600):
    return Client(broker, clientid, version=V5, persistent=True, session_expiry=session_expiry,
                  username=MEMBERS[clientid])


class Admin:
    """A client on the control topic: send commands, read the responses."""

    def __init__(self, broker, username="admin"):
        self.c = Client(broker, "admin-" + str(time.monotonic_ns()), version=V5, username=username)
        self.c.subscribe(RESPONSE, 1)

    def send_raw(self, payload, timeout=10.0):
        self.c.clear()
        self.c.publish(CONTROL, payload, qos=1)
        msgs = self.c.wait_for(1, timeout=timeout, topic=RESPONSE)
        return json.loads(msgs[0].payload)["responses"]

    def command(self, name, **members):
        [resp] = self.send_raw(json.dumps({"commands": [{"command": name, **members}]}))
        assert resp["command"] == name
        return resp

    def ok(self, name, **members):
        resp = self.command(name, **members)
        assert "error" not in resp, resp
        return resp["data"]

    def close(self):
        self.c.disconnect()


def cli(broker, *args, check=True):
    return run_cli(broker, *args, check=check)


def build_chat(broker):
    """Sessions, retained messages, everyone offline, then traffic."""
    broker.plugin_opts["personal_topics"] = PERSONAL
    broker.start()
    for cid, user in MEMBERS.items():
        c = member(broker, cid)
        c.subscribe("groups/g1/#", 1)
        c.subscribe(f"users/{user}/#", 1)
        c.disconnect()
    with Client(broker, "server", version=V5) as p:
        p.publish("groups/g1/info", b"group rules", retain=True)
        for user in ("alice", "bob", "carol"):
            p.publish(f"users/{user}/profile", f"profile of {user}".encode(), retain=True)
        p.publish_numbered("groups/g1/chat", range(1, GROUP_MSGS + 1))
        for user in ("alice", "bob", "carol"):
            p.publish(f"users/{user}/inbox", f"private to {user}".encode())
    broker.settle()


def check_after_deletion(broker):
    """alice is gone; bob and carol have everything, in order."""
    for cid in ("alice-phone", "alice-laptop"):
        # Session expiry 0: looking must not create a new session.
        c = member(broker, cid, session_expiry=0)
        assert not c.session_present, f"{cid} still has a session"
        assert c.listen(0.5) == []
        c.disconnect()
    for cid in ("bob-phone", "carol-phone"):
        user = MEMBERS[cid]
        c = member(broker, cid)
        assert c.session_present
        got = c.collect(QUEUED, timeout=20)
        chat = [m for m in got if m.topic == "groups/g1/chat"]
        assert_sequence(seqs_of(chat), list(range(1, GROUP_MSGS + 1)), f"{cid} group messages")
        assert [m.payload for m in got if m.topic == f"users/{user}/inbox"] == [f"private to {user}".encode()]
        c.disconnect()
    # Retained: the group's and bob's stay, alice's personal one is gone.
    with Client(broker, "reader", version=V5) as r:
        r.subscribe("groups/#", 1)
        r.subscribe("users/#", 1)
        retained = {m.topic: m.payload for m in r.listen(1.0)}
    assert retained == {
        "groups/g1/info": b"group rules",
        "users/bob/profile": b"profile of bob",
        "users/carol/profile": b"profile of carol",
    }


def file_has_no_trace_of_alice(broker):
    broker.stop()
    export = cli(broker, "export").stdout
    records = [json.loads(line) for line in export.splitlines() if line.strip()]
    assert records, "export printed nothing"
    assert not [r for r in records if "alice" in json.dumps(r)], "alice is still in the database"
    verify = cli(broker, "verify", check=False)
    assert verify.returncode == 0, f"verify not clean:\n{verify.stdout}\n{verify.stderr}"


def test_delete_account_through_api(broker):
    build_chat(broker)
    admin = Admin(broker)
    before = admin.ok("getSession", clientid="alice-phone")
    assert before["username"] == "alice" and before["queuedMessages"] == QUEUED
    data = admin.ok("deleteAccount", username="alice", correlationData="erase-1")
    assert data["sessions"] == 2
    assert sorted(data["clientids"]) == ["alice-laptop", "alice-phone"]
    assert data["queuedMessages"] == 2 * QUEUED
    assert data["retainedMessages"] == 1
    resp = admin.command("getSession", clientid="alice-phone")
    assert resp.get("error") == "Session not found"
    admin.close()
    broker.restart("kill")
    check_after_deletion(broker)
    file_has_no_trace_of_alice(broker)


def test_delete_account_through_cli_offline(broker):
    build_chat(broker)
    broker.stop()
    out = cli(broker, "delete-account", "--username", "alice", "--personal-topics", PERSONAL).stdout
    assert out.strip(), "delete-account printed no report"
    broker.start()
    check_after_deletion(broker)
    file_has_no_trace_of_alice(broker)


def test_delete_connected_client_by_clientid(broker):
    """A live connection is cut off; only that device goes."""
    build_chat(broker)
    phone = member(broker, "alice-phone")
    admin = Admin(broker)
    data = admin.ok("deleteAccount", clientid="alice-phone")
    assert data["sessions"] == 1 and data["clientids"] == ["alice-phone"]
    deadline = time.monotonic() + 10
    while phone.mqtt.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not phone.mqtt.is_connected(), "the deleted client is still connected"
    laptop = admin.ok("getSession", clientid="alice-laptop")
    assert laptop["queuedMessages"] == QUEUED
    admin.close()


def test_list_sessions_pages_and_filters(broker):
    build_chat(broker)
    admin = Admin(broker)
    everyone = admin.ok("listSessions")
    assert everyone["totalCount"] == 4
    assert sorted(s["clientid"] for s in everyone["sessions"]) == sorted(MEMBERS)
    page = admin.ok("listSessions", offset=1, count=2)
    assert page["totalCount"] == 4 and len(page["sessions"]) == 2
    assert [s["clientid"] for s in page["sessions"]] == [s["clientid"] for s in everyone["sessions"]][1:3]
    alice = admin.ok("listSessions", username="alice")
    assert sorted(s["clientid"] for s in alice["sessions"]) == ["alice-laptop", "alice-phone"]
    prefix = admin.ok("listSessions", clientidPrefix="bob")
    assert [s["clientid"] for s in prefix["sessions"]] == ["bob-phone"]
    admin.close()


def test_purge_queue_keeps_session(broker):
    build_chat(broker)
    admin = Admin(broker)
    assert admin.ok("purgeQueue", clientid="bob-phone")["queuedMessages"] == QUEUED
    s = admin.ok("getSession", clientid="bob-phone")
    assert s["queuedMessages"] == 0 and len(s["subscriptions"]) == 2
    admin.close()
    broker.restart("kill")
    bob = member(broker, "bob-phone")
    assert bob.session_present
    assert bob.listen(1.0) == []
    bob.disconnect()
    carol = member(broker, "carol-phone")
    assert len([m for m in carol.collect(QUEUED, timeout=20) if m.topic == "groups/g1/chat"]) == GROUP_MSGS
    carol.disconnect()


def test_get_stats(broker):
    build_chat(broker)
    admin = Admin(broker)
    s = admin.ok("getStats")
    assert s["sessions"] == 4
    assert s["queuedMessages"] == 4 * QUEUED
    assert s["messageBodies"] >= GROUP_MSGS + 3
    assert s["databaseBytes"] > 0 and 0 < s["mapUse"] <= 1
    assert s["commits"] > 0 and s["commitLatencyP99us"] >= s["commitLatencyP50us"] > 0
    assert s["recordsRejected"] == 0
    admin.close()


BAD_REQUESTS = [
    (b"not json", "Payload not valid JSON"),
    (b'{"commands": 5}', "Invalid/missing commands"),
    (b'{"commands": ["deleteAccount"]}', "Command not an object"),
    (b'{"commands": [{"command": "dropEverything"}]}', "Unknown command"),
    (b'{"commands": [{"command": "deleteAccount"}]}', "exactly one"),
    (b'{"commands": [{"command": "deleteAccount", "username": "alice", "clientid": "bob-phone"}]}', "exactly one"),
    (b'{"commands": [{"command": "deleteAccount", "username": 7}]}', "must be a non-empty string"),
    (b'{"commands": [{"command": "deleteAccount", "username": ""}]}', "must be a non-empty string"),
    (b'{"commands": [{"command": "getSession"}]}', "required"),
    (b'{"commands": [{"command": "getSession", "clientid": ["x"]}]}', "must be a non-empty string"),
    (b'{"commands": [{"command": "listSessions", "count": -1}]}', "whole number"),
    (b'{"commands": [{"command": "listSessions", "offset": 1.5}]}', "whole number"),
    (b'{"commands": [{"command": "purgeQueue", "clientid": "nobody"}]}', "Session not found"),
    (b'{"commands": [{"command": "getStats", "correlationData": 5}]}', "Invalid correlationData"),
    (b'{"commands": [{"command": "deleteAccount", "username": "' + b"x" * 70000 + b'"}]}', "too large"),
]


def test_bad_requests_change_nothing(broker):
    build_chat(broker)
    admin = Admin(broker)
    before = admin.ok("getStats")
    for payload, fragment in BAD_REQUESTS:
        responses = admin.send_raw(payload)
        assert len(responses) == 1, (payload[:60], responses)
        assert fragment.lower() in responses[0].get("error", "").lower(), (payload[:60], responses)
    after = admin.ok("getStats")
    for k in ("sessions", "queuedMessages", "messageBodies"):
        assert after[k] == before[k], k
    assert broker.running
    admin.close()


def test_acl_decides_who_reaches_the_api(broker, workdir):
    """Only a client the broker's ACL lets publish to the control topic gets
    an answer; another one changes nothing."""
    acl = workdir / "acl"
    acl.write_text("pattern readwrite #\n\nuser admin\ntopic readwrite $CONTROL/persist-lmdb/#\n")
    os.chmod(acl, 0o644)
    broker.extra_conf.append(f"acl_file {acl}")
    build_chat(broker)
    broker.plugin_opts["control_users"] = "*"  # the ACL alone decides
    broker.restart()
    admin = Admin(broker, username="admin")
    with Client(broker, "mallory", version=V5, username="mallory") as mallory:
        mallory.mqtt.subscribe(RESPONSE, 1)
        mallory.publish(CONTROL, json.dumps({"commands": [{"command": "deleteAccount", "username": "bob"}]}))
        assert mallory.listen(1.5) == [], "the API answered a client the ACL does not allow"
    assert admin.ok("getSession", clientid="bob-phone")["queuedMessages"] == QUEUED
    admin.close()


# Every command, aimed at bob's account (build_chat).
EVERY_COMMAND = [
    {"command": "listSessions"},
    {"command": "getSession", "clientid": "bob-phone"},
    {"command": "getStats"},
    {"command": "purgeQueue", "clientid": "bob-phone"},
    {"command": "deleteAccount", "clientid": "bob-phone"},
    {"command": "deleteAccount", "username": "bob"},
]


def eavesdropper(broker, username="eve"):
    c = Client(broker, "eavesdropper", version=V5, username=username)
    c.mqtt.subscribe(RESPONSE, 1)
    c.mqtt.subscribe("$CONTROL/#", 1)
    return c


def try_every_command(broker, name, **auth):
    """Every command from one client; the responses it got back."""
    with Client(broker, name, version=V5, **auth) as c:
        c.subscribe(RESPONSE, 1)
        for cmd in EVERY_COMMAND:
            c.publish(CONTROL, json.dumps({"commands": [cmd]}))
        got = c.listen(1.0, topic=RESPONSE)
    return [r for m in got for r in json.loads(m.payload)["responses"]]


def bob_is_intact(broker):
    c = member(broker, "bob-phone")
    assert c.session_present, "bob's session is gone"
    assert len(c.collect(QUEUED, timeout=20)) == QUEUED, "bob's queue changed"
    c.disconnect()


def test_api_off_without_control_users(broker):
    """A broker that lets anyone in (allow_anonymous true, no ACL, no
    authentication) and does not set plugin_opt_control_users: nobody can
    use the API, not an anonymous client, not one claiming any username;
    each gets an error and nothing else, an eavesdropper hears nothing, and
    nothing changes."""
    del broker.plugin_opts["control_users"]
    build_chat(broker)
    assert "control API $CONTROL/persist-lmdb/v1 off" in broker.log(), broker.log()[-2000:]
    eve = eavesdropper(broker)
    for name, auth in [("anonymous", {}), ("claims-admin", {"username": "admin"}), ("bob-too", {"username": "bob"})]:
        responses = try_every_command(broker, name, **auth)
        assert len(responses) == len(EVERY_COMMAND), (name, responses)
        for r in responses:
            assert r.get("error", "").startswith("The control API is off") and "data" not in r, (name, r)
    assert eve.listen(0.5) == [], "the eavesdropper heard the API"
    eve.disconnect()
    assert "control request from anonymous/ refused" in broker.log(), broker.log()[-2000:]
    bob_is_intact(broker)


def test_only_control_users_use_the_api(broker):
    """plugin_opt_control_users admin: an anonymous client and another user
    are refused and change nothing; admin's commands work, and only admin
    reads its answers (an eavesdropper subscribed to the response topic, even
    one with the same username, hears nothing). Refusals are counted."""
    build_chat(broker)
    assert "control API $CONTROL/persist-lmdb/v1 for the users admin" in broker.log()
    eve = eavesdropper(broker)
    twin = eavesdropper(broker, username="admin")
    for name, auth in [("anonymous", {}), ("bob-console", {"username": "bob"})]:
        for r in try_every_command(broker, name, **auth):
            assert r.get("error", "").startswith("Not authorised") and "data" not in r, (name, r)
    admin = Admin(broker)
    data = admin.ok("getStats")
    assert data["controlRefused"] == 2 * len(EVERY_COMMAND), data
    assert admin.ok("getSession", clientid="bob-phone")["queuedMessages"] == QUEUED
    assert eve.listen(0.5) == [] and twin.listen(0) == [], "another client read the API's answers"
    eve.disconnect()
    twin.disconnect()
    admin.close()
    bob_is_intact(broker)


def test_control_users_star_is_explicit(broker):
    """* lets any client with a username through (the ACL decides), and says
    so at start-up as a warning; a client without a username never."""
    broker.plugin_opts["control_users"] = "*"
    build_chat(broker)
    assert "control API $CONTROL/persist-lmdb/v1 open to every client with a username" in broker.log()
    for r in try_every_command(broker, "anonymous"):
        assert r.get("error", "").startswith("Not authorised"), r
    admin = Admin(broker, username="anyone")
    assert admin.ok("getSession", clientid="bob-phone")["queuedMessages"] == QUEUED
    admin.close()


def test_personal_topics_never_reach_another_account(broker):
    """Issue 20: a user who connects as victim-phone/settings and has that
    account deleted must not take victim-phone's retained messages under
    inbox/victim-phone/settings/...; the response says what was left out
    and why. A NUL in a name is refused, not cut (victim-phone\\u0000...
    named victim-phone)."""
    broker.plugin_opts["personal_topics"] = PERSONAL
    broker.start()
    with Client(broker, "victim-phone", version=V5, persistent=True, session_expiry=3600,
                username="victim") as v:
        v.subscribe("inbox/victim-phone/#", 1)
    with Client(broker, "victim-phone/settings", version=V5, persistent=True, session_expiry=3600,
                username="mallory") as m:
        m.subscribe("chat/#", 1)
    with Client(broker, "setter", version=V5) as p:
        p.publish("inbox/victim-phone/settings/theme", b"dark", qos=1, retain=True)
        p.publish("inbox/victim-phone/note", b"hello", qos=1, retain=True)
    admin = Admin(broker)
    data = admin.ok("deleteAccount", clientid="victim-phone/settings")
    assert data["clientids"] == ["victim-phone/settings"] and data["retainedMessages"] == 0, data
    assert data["personalTopicsSkipped"] is True
    assert data["skipped"] == [{"clientid": "victim-phone/settings",
                                "reason": "contains '/', which would reach into another account's topics"}], data
    for payload in ('{"commands":[{"command":"deleteAccount","clientid":"victim-phone\\u0000-not-this-one"}]}',
                    '{"commands":[{"command":"deleteAccount","username":"victim\\u0000"}]}'):
        [resp] = admin.send_raw(payload)
        assert resp.get("error") == "Strings must not hold a NUL character (\\u0000)", resp
    assert admin.ok("getSession", clientid="victim-phone")["username"] == "victim"
    admin.close()
    with Client(broker, "reader", version=V5) as r:
        r.subscribe("inbox/#", 1)
        retained = sorted((m.topic, m.payload) for m in r.listen(1.0))
    assert retained == [("inbox/victim-phone/note", b"hello"), ("inbox/victim-phone/settings/theme", b"dark")]


def test_personal_topics_option_refuses_partial_levels(broker):
    """%u and %c must each be a whole level: with u-%u, the users "x" and
    "u-x"... would share topics. The broker refuses such a pattern."""
    broker.plugin_opts["personal_topics"] = "users/u-%u/#"
    broker.assert_refuses("plugin_opt_personal_topics 'users/u-%u/#': %u and %c must each be a whole topic level")


LONG_ID = "L" * 65535  # the protocol's longest client id


def test_longest_client_id_through_api_and_cli(broker):
    """A client id of 65,535 bytes can be inspected, listed and deleted
    through the API, and inspected and deleted through the CLI."""
    broker.plugin_opts["personal_topics"] = PERSONAL
    broker.start()
    for cid in (LONG_ID, LONG_ID[:-1] + "M"):
        with Client(broker, cid, version=V5, persistent=True, session_expiry=3600, username="long") as c:
            c.subscribe("long/t", 1)
    with Client(broker, "long-pub") as p:
        p.publish_numbered("long/t", range(1, 4))
    admin = Admin(broker)
    got = admin.ok("getSession", clientid=LONG_ID)
    assert got["clientid"] == LONG_ID and got["queuedMessages"] == 3, {k: v for k, v in got.items() if k != "clientid"}
    listed = admin.ok("listSessions", username="long")
    assert sorted(s["clientid"] for s in listed["sessions"]) == sorted([LONG_ID, LONG_ID[:-1] + "M"])
    data = admin.ok("deleteAccount", clientid=LONG_ID)
    assert data["clientids"] == [LONG_ID] and data["queuedMessages"] == 3
    admin.close()
    broker.stop()
    other = LONG_ID[:-1] + "M"
    q = cli(broker, "queue", other)
    assert q.stdout.count("\n") >= 3, q.stdout[-500:]
    d = cli(broker, "delete-account", "--clientid", other, "--json")
    out = json.loads(d.stdout)
    assert out["sessions"] == [other] and out["queued"] == 3, {k: v for k, v in out.items() if k != "sessions"}
    assert cli(broker, "queue", other, check=False).returncode == 1
