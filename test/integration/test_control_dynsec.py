"""The control API under dynamic-security: only a client holding the role
given in docs/control-api.md reaches it; another authenticated client gets
no answer and changes nothing."""

import json

from harness import DYNSEC, DYNSEC_PLUGIN, V5, Client, dynsec, dynsec_config

CONTROL = "$CONTROL/persist-lmdb/v1"
RESPONSE = CONTROL + "/response"

# The role as docs/control-api.md gives it.
ADMIN_ROLE = [
    {"command": "createRole", "rolename": "persist-lmdb-admin"},
    {"command": "addRoleACL", "rolename": "persist-lmdb-admin", "acltype": "publishClientSend",
     "topic": CONTROL, "allow": True},
    {"command": "addRoleACL", "rolename": "persist-lmdb-admin", "acltype": "subscribePattern",
     "topic": RESPONSE, "allow": True},
    {"command": "addRoleACL", "rolename": "persist-lmdb-admin", "acltype": "publishClientReceive",
     "topic": RESPONSE, "allow": True},
]
MEMBER_ROLE = [
    {"command": "createRole", "rolename": "member"},
    *({"command": "addRoleACL", "rolename": "member", "acltype": t, "topic": "chat/#", "allow": True}
      for t in ("publishClientSend", "publishClientReceive", "subscribePattern")),
]


def test_only_the_role_reaches_the_api(broker, workdir):
    config = dynsec_config(workdir, "root-admin", "root-pass")
    broker.extra_conf += [f"global_plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {config}"]
    broker.plugin_opts["control_users"] = "ops"
    broker.start()

    admin = Client(broker, "root-admin", version=V5, username="root-admin", password="root-pass")
    admin.subscribe(DYNSEC + "/response", 1)
    dynsec(admin, ADMIN_ROLE + MEMBER_ROLE + [
        {"command": "createClient", "username": "ops", "password": "ops-pass"},
        {"command": "addClientRole", "username": "ops", "rolename": "persist-lmdb-admin"},
        {"command": "createClient", "username": "bob", "password": "bob-pass"},
        {"command": "addClientRole", "username": "bob", "rolename": "member"},
        {"command": "createClient", "username": "mallory", "password": "mallory-pass"},
        {"command": "addClientRole", "username": "mallory", "rolename": "member"},
    ])

    bob = Client(broker, "bob-phone", version=V5, persistent=True, session_expiry=3600,
                 username="bob", password="bob-pass")
    bob.subscribe("chat/#", 1)
    bob.disconnect()
    mallory = Client(broker, "mallory", version=V5, username="mallory", password="mallory-pass")
    mallory.publish_numbered("chat/room", range(1, 6))

    ops = Client(broker, "ops", version=V5, username="ops", password="ops-pass")
    ops.subscribe(RESPONSE, 1)
    # mallory may publish to chat/#, not to the control topic: the broker
    # refuses the PUBLISH and the plugin never sees it.
    mallory.publish(CONTROL, json.dumps({"commands": [{"command": "deleteAccount", "username": "bob"}]}))
    assert ops.listen(1.5) == [], "the API answered a client without the role"

    ops.publish(CONTROL, json.dumps({"commands": [{"command": "getSession", "clientid": "bob-phone"}]}))
    [resp] = json.loads(ops.wait_for(1, topic=RESPONSE)[0].payload)["responses"]
    assert resp["data"]["queuedMessages"] == 5, resp
    for c in (mallory, ops, admin):
        c.disconnect()
