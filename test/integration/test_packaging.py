"""Packaging: what `cmake --install` installs, the Docker image's build steps
(docker/build.sh, docker/runtime-setup.sh, docker/entrypoint.sh: the scripts
docker/Dockerfile runs, run here without a Docker engine), the example
configurations in conf/ as installed, and the commands the operator docs give
(docs/quickstart.md, docs/operations.md)."""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from harness import (
    HOST, REPO, V311, V5, Broker, Client, check_seed, free_port, give_to_broker, numbered_payload,
    seed_data, seqs_of, assert_sequence, write_key,
)

BUILD = Path(os.environ.get("PERSIST_LMDB_BUILD") or REPO / "build")
IMAGE_UID = 1883  # docker/runtime-setup.sh
DOC_DIR = "share/doc/persist-lmdb"
EXAMPLES = ["minimal.conf", "production.conf", "high-throughput.conf", "strict-durability.conf"]
CONTROL = "$CONTROL/persist-lmdb/v1"
RESPONSE = CONTROL + "/response"


def run(cmd, timeout=60, **kw):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def ok(cmd, timeout=60, **kw):
    r = run(cmd, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd}: exit status {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def make_dir(prefix: str) -> Path:
    """A directory under /tmp that other users can traverse (pytest's own
    are 0700, and the broker runs as another user)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    return d


def files_under(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() or p.is_symlink()}


def documented_install() -> set[str]:
    """The files docs/quickstart.md says `cmake --install` puts under the
    prefix: the first cell of each row of the table in the section "What
    `cmake --install` installs", a `*.md` row standing for README.md and
    every docs/*.md."""
    text = (REPO / "docs/quickstart.md").read_text()
    m = re.search(r"^## What `cmake --install` installs\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, "docs/quickstart.md has no section 'What `cmake --install` installs'"
    paths = re.findall(r"^\| `([^`]+)` \|", m.group(1), re.M)
    assert paths, "no table rows in the install section of docs/quickstart.md"
    out = set()
    for p in paths:
        if p.endswith("/*.md"):
            base = p[:-len("*.md")]
            out |= {base + "README.md"} | {base + d.name for d in (REPO / "docs").glob("*.md")}
        else:
            out.add(p)
    return out


def check_installed(prefix: Path) -> None:
    """The tree under prefix is what the docs list, the example configs are
    those of conf/, and the installed CLI runs."""
    got = files_under(prefix)
    want = documented_install()
    assert got == want, (f"installed but not in docs/quickstart.md: {sorted(got - want)}; "
                         f"documented but not installed: {sorted(want - got)}")
    for name in EXAMPLES:
        assert (prefix / DOC_DIR / "examples" / name).read_bytes() == (REPO / "conf" / name).read_bytes(), name
    in_conf = {p.name for p in (REPO / "conf").glob("*.conf")}
    assert in_conf == set(EXAMPLES), f"conf/ has {sorted(in_conf)}: install them and list them here"
    r = ok([prefix / "bin/persist-lmdb", "--help"])
    assert "verify" in r.stdout + r.stderr
    plugin = prefix / "lib/mosquitto/mosquitto_persist_lmdb.so"
    syms = ok(["nm", "-D", "--defined-only", plugin]).stdout
    assert re.search(r" T mosquitto_plugin_init$", syms, re.M), "the plugin does not export mosquitto_plugin_init"


# --------------------------------------------------------------------------
# The tree docker/build.sh installs, and docker/runtime-setup.sh on it
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_tree():
    """docker/build.sh REPO BUILD DESTDIR /usr, as the Dockerfile's build
    stage runs it (a fresh build directory: about 10 s on two cores)."""
    top = make_dir("plmdb-pkg-")
    root = top / "root"
    r = run(["sh", REPO / "docker/build.sh", REPO, top / "build", root, "/usr"], timeout=600)
    assert r.returncode == 0, f"docker/build.sh failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime_root(docker_tree):
    """docker/runtime-setup.sh on the tree, with the user database of this
    root (where Debian's package made `mosquitto`) copied in, as in the
    runtime stage."""
    if os.geteuid() != 0:
        pytest.skip("runtime-setup.sh runs as root (as in the image build)")
    etc = docker_tree / "etc"
    etc.mkdir(exist_ok=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), etc / name)
    m = re.search(r"^mosquitto:[^:]*:(\d+):(\d+):", (etc / "passwd").read_text(), re.M)
    assert m, "this root has no mosquitto user"
    # What Debian's package leaves: directories of the user's old uid.
    for d in ("var/lib/mosquitto", "var/log/mosquitto"):
        (docker_tree / d).mkdir(parents=True)
        os.chown(docker_tree / d, int(m.group(1)), int(m.group(2)))
        os.chmod(docker_tree / d, 0o755)
    ok(["sh", REPO / "docker/runtime-setup.sh", docker_tree])
    return docker_tree


def test_docker_build_script_installs_the_documented_tree(docker_tree):
    prefix = docker_tree / "usr"
    assert files_under(docker_tree) == {"usr/" + f for f in files_under(prefix)}, "files outside the prefix"
    check_installed(prefix)
    # --strip: no symbol table left in what goes into the image.
    for f in ("bin/persist-lmdb", "lib/mosquitto/mosquitto_persist_lmdb.so"):
        sections = ok(["readelf", "-S", "-W", prefix / f]).stdout
        assert ".symtab" not in sections, f"{f} is not stripped"


def dockerfile_stage(name: str) -> str:
    text = (REPO / "docker/Dockerfile").read_text()
    m = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    assert m, f"docker/Dockerfile has no stage {name}"
    return m.group(1)


def runtime_packages() -> set[str]:
    stage = dockerfile_stage("runtime")
    m = re.search(r"# BEGIN runtime packages\n(.*?)# END runtime packages", stage, re.S)
    assert m, "no runtime package block in docker/Dockerfile"
    words = m.group(1).replace("\\\n", " ").split()
    i = words.index("--no-install-recommends")
    pkgs = []
    for w in words[i + 1:]:
        if w in ("&&", "\\"):
            break
        pkgs.append(w)
    return set(pkgs)


def test_dockerfile_runs_the_tested_scripts_and_installs_what_they_link(docker_tree):
    build = dockerfile_stage("build")
    assert "COPY scripts/packages.txt" in build and "/tmp/packages.txt" in build, \
        "the build stage must install the build root's package list"
    assert re.search(r"^RUN docker/build\.sh /src /build /out /usr$", build, re.M), build
    runtime = dockerfile_stage("runtime")
    assert "COPY --from=build /out/ /" in runtime
    assert re.search(r"^RUN /tmp/docker/runtime-setup\.sh\b", runtime, re.M), runtime
    assert re.search(r"^USER 1883:1883$", runtime, re.M) and IMAGE_UID == 1883
    assert re.search(r"^VOLUME /var/lib/mosquitto$", runtime, re.M)

    pkgs = runtime_packages()
    # The broker, mdb_copy for backups (docs/operations.md), mosquitto_ctrl.
    assert {"mosquitto", "lmdb-utils", "mosquitto-clients"} <= pkgs, pkgs
    # Every library the plugin and the CLI link comes with a package the
    # runtime stage installs (libc6 is in every Debian image).
    prefix = docker_tree / "usr"
    for f in ("bin/persist-lmdb", "lib/mosquitto/mosquitto_persist_lmdb.so"):
        dyn = ok(["readelf", "-d", "-W", prefix / f]).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        assert "liblmdb.so.0" in needed, needed
        for lib in needed:
            path = ok(["sh", "-c", f"ldconfig -p | awk '$1 == \"{lib}\" {{ print $NF; exit }}'"]).stdout.strip()
            assert path, f"{lib} not found by ldconfig"
            owner = ok(["dpkg", "-S", os.path.realpath(path)]).stdout.split(":")[0]
            assert owner in pkgs | {"libc6"}, f"{f} needs {lib} from {owner}, which the runtime stage does not install"


def test_runtime_setup_makes_the_image_layout(runtime_root):
    root = runtime_root
    passwd = (root / "etc/passwd").read_text()
    assert re.search(rf"^mosquitto:[^:]*:{IMAGE_UID}:{IMAGE_UID}:", passwd, re.M), passwd
    assert re.search(rf"^mosquitto:[^:]*:{IMAGE_UID}:", (root / "etc/group").read_text(), re.M)
    for d, mode in (("var/lib/mosquitto", 0o700), ("var/log/mosquitto", 0o750), ("run/mosquitto", 0o750)):
        st = (root / d).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (IMAGE_UID, IMAGE_UID, mode), d
    assert (root / "etc/mosquitto/mosquitto.conf").read_bytes() == (REPO / "docker/mosquitto.conf").read_bytes()
    ep = root / "usr/local/bin/docker-entrypoint.sh"
    assert os.access(ep, os.X_OK)
    link = root / "usr/lib/mosquitto/mosquitto_dynamic_security.so"
    target = os.readlink(link)
    assert target.startswith("/usr/lib/") and Path(target).is_file(), target
    # Twice is the same as once (a rebuilt layer, a rerun).
    ok(["sh", REPO / "docker/runtime-setup.sh", root])
    assert (root / "etc/passwd").read_text() == passwd


# --------------------------------------------------------------------------
# Configuration files adapted to a test directory
# --------------------------------------------------------------------------


def adapt(text: str, port: int, paths: dict[str, str]) -> str:
    """A config with its first listener on 127.0.0.1:port (other listeners
    dropped), log to stderr, and system paths moved (one pass, longest
    first, on non-comment lines)."""
    pat = re.compile("|".join(re.escape(k) for k in sorted(paths, key=len, reverse=True)))
    out, listener = [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#") or not s:
            out.append(line)
        elif s.startswith("listener "):
            if not listener:
                out.append(f"listener {port} {HOST}")
                listener = True
        elif s.startswith("log_dest "):
            if "log_dest stderr" not in out:
                out.append("log_dest stderr")
        else:
            out.append(pat.sub(lambda m: paths[m.group(0)], line))
    assert listener, "no listener in the config"
    return "\n".join(out) + "\n"


def conf_values(text: str, key: str) -> list[str]:
    return [l.split(None, 1)[1].strip() for l in text.splitlines()
            if l.strip() and not l.lstrip().startswith("#") and l.split()[0] == key]


class ConfBroker(Broker):
    """harness.Broker running a given configuration text."""

    def __init__(self, root: Path, port: int, text: str, key_file: Path, plugin: Path):
        super().__init__(root, port, key_file, plugin)
        self.text = text
        self.log_types = []

    def config_text(self) -> str:
        return self.text


@pytest.fixture
def tmpdir_broker():
    d = make_dir("plmdb-pkg-run-")
    give_to_broker(d)
    made = []
    yield d, made
    for b in made:
        try:
            b.stop()
        finally:
            b.close()
    shutil.rmtree(d, ignore_errors=True)


def example_broker(tree: Path, name: str, d: Path, made: list) -> ConfBroker:
    """An installed example config on a free port, its /etc/mosquitto and
    /var/lib/mosquitto moved into d, with a key, a password file (user
    `app`) and a dynamic-security file (user `admin`) as the config needs.
    Started as root, the broker switches to `mosquitto` as on a Debian host."""
    text = (tree / "usr" / DOC_DIR / "examples" / name).read_text()
    etc, data = d / "etc", d / "data"
    for p in (etc, data):
        p.mkdir(exist_ok=True)
        give_to_broker(p)
    port = free_port()
    conf = adapt(text, port, {
        "/usr/lib/mosquitto/": f"{tree}/usr/lib/mosquitto/",
        "/etc/mosquitto/": f"{etc}/",
        "/var/lib/mosquitto": str(data),
    })
    for line in conf_values(conf, "global_plugin"):
        if "dynamic_security" in line and not Path(line).exists():
            pytest.fail(f"{name}: {line} missing on this machine")
    key = etc / "persist-lmdb.key"
    assert conf_values(conf, "plugin_opt_key_file") == [str(key)]
    write_key(key)
    for pw in conf_values(conf, "password_file"):
        ok(["mosquitto_passwd", "-c", "-b", pw, "app", "app-password"])
        give_to_broker(Path(pw))
        os.chmod(pw, 0o600)
    for cf in conf_values(conf, "plugin_opt_config_file"):
        ok(["mosquitto_ctrl", "dynsec", "init", cf, "admin", "admin-password"])
        give_to_broker(Path(cf))
    # The plugin's start-up lines are at level information.
    conf += "log_type information\n"
    b = ConfBroker(d, port, conf, key, tree / "usr/lib/mosquitto/mosquitto_persist_lmdb.so")
    made.append(b)
    return b


def sizes_kib(v: str) -> int:
    n, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", v).groups()
    return int(n) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()] >> 10


@pytest.mark.parametrize("name", ["minimal.conf", "high-throughput.conf", "strict-durability.conf"])
def test_example_config_keeps_sessions(docker_tree, tmpdir_broker, name):
    """The installed example, as written: the plugin opens with its sync mode
    and journal, and an offline persistent session gets its messages after a
    kill -9 and after a clean restart."""
    d, made = tmpdir_broker
    b = example_broker(docker_tree, name, d, made)
    b.start()
    sync = (conf_values(b.text, "plugin_opt_sync") or ["tick"])[-1]
    journal = sizes_kib((conf_values(b.text, "plugin_opt_journal_size") or ["16M"])[-1])
    opened = [l for l in b.plugin_lines() if "persist-lmdb: opened" in l]
    assert opened and f"sync {sync}, journal {journal} KiB" in opened[0], b.plugin_lines()

    auth = {"username": "app", "password": "app-password"} if conf_values(b.text, "password_file") else {}
    with Client(b, "phone", version=V311, persistent=True, **auth) as c:
        c.subscribe("inbox/#", 1)
    with Client(b, "sender", **auth) as p:
        p.publish_numbered("inbox/alice", range(1, 6))
    time.sleep(0.3)
    b.restart("kill")
    with Client(b, "phone", version=V311, persistent=True, **auth) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(5)), [1, 2, 3, 4, 5], name)
    with Client(b, "sender", **auth) as p:
        p.publish_numbered("inbox/alice", range(6, 9))
    b.restart("term")
    with Client(b, "phone", version=V311, persistent=True, **auth) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(3)), [6, 7, 8], name)


def control(client: Client, command: dict) -> dict:
    client.clear()
    client.publish(CONTROL, json.dumps({"commands": [command]}))
    [resp] = json.loads(client.wait_for(1, topic=RESPONSE)[0].payload)["responses"]
    return resp


def test_production_example_with_its_control_api_role(docker_tree, tmpdir_broker):
    """production.conf as installed, dynamic-security set up with the
    commands in its comments: the operator account they make reaches the
    control API, and it survives a restart with the sessions."""
    d, made = tmpdir_broker
    b = example_broker(docker_tree, "production.conf", d, made)
    b.start()
    assert "sync tick" in " ".join(b.plugin_lines())
    assert conf_values(b.text, "max_queued_messages") == ["10000"]

    # The commented commands, as written; mosquitto_ctrl prompts for the
    # passwords they leave out, so the test gives them.
    text = (REPO / "conf/production.conf").read_text()
    base = re.search(r'^#\s+C="(mosquitto_ctrl [^"]*)"$', text, re.M).group(1)
    lines = re.findall(r"^#\s+\$C (dynsec .*)$", text, re.M)
    assert any("createRole persist-lmdb-admin" in l for l in lines), lines
    ctrl = shlex.split(base) + ["-p", str(b.port), "-P", "admin-password"]
    for line in lines:
        args = shlex.split(line)
        if args[1] == "createClient":
            args += ["-p", "ops-password"]
        r = run(ctrl + args, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and "Error" not in r.stdout + r.stderr, f"{line}:\n{r.stdout}{r.stderr}"

    with Client(b, "ops-console", username="ops", password="ops-password") as ops:
        ops.subscribe(RESPONSE, 1)
        resp = control(ops, {"command": "getStats"})
        assert "error" not in resp and "sessions" in resp["data"], resp
    # Someone without the role gets no answer.
    ok(ctrl + ["dynsec", "createClient", "mallory", "-p", "mallory-password"], stdin=subprocess.DEVNULL)
    with Client(b, "mallory-1", username="mallory", password="mallory-password") as m:
        m.mqtt.subscribe(RESPONSE, 1)
        m.publish(CONTROL, json.dumps({"commands": [{"command": "getStats"}]}))
        assert m.listen(1.0, topic=RESPONSE) == []

    b.restart("kill")
    with Client(b, "ops-console", username="ops", password="ops-password") as ops:
        ops.subscribe(RESPONSE, 1)
        resp = control(ops, {"command": "getStats"})
        assert "error" not in resp, resp


# --------------------------------------------------------------------------
# The admin surface of every shipped configuration
# --------------------------------------------------------------------------

def attacks(clientid: str, username: str) -> list[dict]:
    """Every command, aimed at one account."""
    return [
        {"command": "listSessions"},
        {"command": "getSession", "clientid": clientid},
        {"command": "getStats"},
        {"command": "purgeQueue", "clientid": clientid},
        {"command": "deleteAccount", "clientid": clientid},
        {"command": "deleteAccount", "username": username},
    ]


def dynsec_ctrl(b) -> list[str]:
    """mosquitto_ctrl as the dynamic-security admin example_broker made."""
    return ["mosquitto_ctrl", "-h", HOST, "-p", str(b.port), "-u", "admin", "-P", "admin-password"]


def installed_cli(tree: Path, b, *args) -> str:
    return ok([tree / "usr/bin/persist-lmdb", "-c", b.conf_path, *args]).stdout


def state_of(tree: Path, b) -> tuple[str, str]:
    """What the database holds of the victim (read while the broker runs)."""
    r = run([tree / "usr/bin/persist-lmdb", "-c", b.conf_path, "queue", "victim-phone"])
    return installed_cli(tree, b, "sessions"), r.stdout


def attack(b, name: str, auth: dict, victim=("victim-phone", "app")) -> list[dict]:
    """Every command about the victim from one client; the responses it got."""
    with Client(b, name, version=V5, **auth) as c:
        c.mqtt.subscribe(RESPONSE, 1)
        for cmd in attacks(*victim):
            c.publish(CONTROL, json.dumps({"commands": [cmd]}))
        got = c.listen(1.0, topic=RESPONSE)
    return [r for m in got for r in json.loads(m.payload)["responses"]]


@pytest.mark.parametrize("name", EXAMPLES + ["dev.conf.in"])
def test_shipped_config_admin_surface(docker_tree, tmpdir_broker, name):
    """Each shipped configuration as installed (and the one scripts/run-broker
    writes): an anonymous client (where the configuration lets one in) and an
    ordinary authenticated one send every command about another account,
    while an eavesdropper listens on the response topic and all of
    $CONTROL. Nothing changes in the database, the eavesdropper hears
    nothing, and what the senders get back, if anything, is an error. Where
    the configuration names an operator, the operator's commands work and
    the eavesdropper does not hear their answers either."""
    d, made = tmpdir_broker
    if name == "dev.conf.in":
        text = (REPO / "conf/dev.conf.in").read_text()
        (docker_tree / "usr" / DOC_DIR / "examples" / name).write_text(
            text.replace("@RUN_DIR@", "/var/lib/mosquitto").replace("@PLUGIN@",
                         "/usr/lib/mosquitto/mosquitto_persist_lmdb.so").replace("@USER_LINE@", "")
                .replace("/var/lib/mosquitto/dev.key", "/etc/mosquitto/persist-lmdb.key"))
    b = example_broker(docker_tree, name, d, made)
    b.start()
    password = bool(conf_values(b.text, "password_file"))
    dynsec = bool(conf_values(b.text, "plugin_opt_config_file"))
    anonymous = conf_values(b.text, "allow_anonymous") == ["true"]
    if dynsec:
        ok(dynsec_ctrl(b) + ["dynsec", "createClient", "app", "-p", "app-password"], stdin=subprocess.DEVNULL)
    user = {"username": "app", "password": "app-password"} if password or dynsec else {"username": "app"}

    # The victim: a persistent session of user app, with queued messages
    # where the configuration lets it subscribe.
    with Client(b, "victim-phone", version=V5, persistent=True, session_expiry=3600, **user) as v:
        if not dynsec:
            v.subscribe("inbox/victim", 1)
    if not dynsec:
        with Client(b, "victim-sender", **user) as p:
            p.publish_numbered("inbox/victim", range(1, 4))
    time.sleep(0.3)
    before = state_of(docker_tree, b)
    assert "victim-phone" in before[0], before

    eaves = Client(b, "eavesdropper", version=V5, **user)
    eaves.mqtt.subscribe(RESPONSE, 1)
    eaves.mqtt.subscribe("$CONTROL/#", 1)
    senders = [("attacker-authenticated", user)] + ([("attacker-anonymous", {})] if anonymous else [])
    for sender, auth in senders:
        for r in attack(b, sender, auth):
            assert "error" in r and "data" not in r, f"{name}: {sender} got an answer: {r}"
    time.sleep(0.3)
    assert state_of(docker_tree, b) == before, f"{name}: the database changed"
    assert eaves.messages() == [], f"{name}: the eavesdropper heard {eaves.messages()}"

    operator = conf_values(b.text, "plugin_opt_control_users")
    assert operator == (["ops"] if name == "production.conf" else []), operator
    if operator:
        text = (REPO / "conf/production.conf").read_text()
        for line in re.findall(r"^#\s+\$C (dynsec .*)$", text, re.M):
            args = shlex.split(line) + (["-p", "ops-password"] if "createClient" in line else [])
            ok(dynsec_ctrl(b) + args, stdin=subprocess.DEVNULL)
        # A second console of the operator listens: it hears nothing either.
        listener = Client(b, "ops-listener", version=V5, username="ops", password="ops-password")
        listener.subscribe(RESPONSE, 1)
        with Client(b, "ops-console", version=V5, username="ops", password="ops-password") as o:
            o.subscribe(RESPONSE, 1)
            resp = control(o, {"command": "getSession", "clientid": "victim-phone"})
            assert resp.get("data", {}).get("username") == "app", resp
        assert listener.listen(0.5) == [], "another client heard the operator's answer"
        assert eaves.messages() == [], f"{name}: the eavesdropper heard {eaves.messages()}"
        listener.disconnect()
    eaves.disconnect()


# --------------------------------------------------------------------------
# The image's configuration and entry point (what the container runs)
# --------------------------------------------------------------------------


def as_image_user() -> list[str]:
    return ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]


def image_config(root: Path, port: int) -> str:
    return adapt((root / "etc/mosquitto/mosquitto.conf").read_text(), port, {
        "/usr/lib/mosquitto/": f"{root}/usr/lib/mosquitto/",
        "/var/lib/mosquitto": f"{root}/var/lib/mosquitto",
        "/run/secrets/": f"{root}/run/secrets/",
        "/etc/mosquitto/": f"{root}/etc/mosquitto/",
    })


def image_secrets(root: Path) -> tuple[Path, Path]:
    secrets = root / "run/secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    key, pw = secrets / "persist-lmdb-key", secrets / "mosquitto-admin-password"
    if not key.exists():
        key.write_bytes(os.urandom(32))
        pw.write_text("image-admin-password\n")
    for p in (key, pw):
        os.chown(p, IMAGE_UID, IMAGE_UID)
        os.chmod(p, 0o600)
    return key, pw


def test_image_broker_runs_as_its_user_and_keeps_sessions(runtime_root, tmpdir_broker):
    """The image's mosquitto.conf through docker-entrypoint.sh as uid 1883:
    the dynamic-security file is created on the data volume with the
    admin password secret, the user commands of docs/quickstart.md work,
    and a persistent session survives kill -9 and a clean restart."""
    root = runtime_root
    d, made = tmpdir_broker
    key, pw = image_secrets(root)
    port = free_port()
    b = ConfBroker(d, port, image_config(root, port), key, root / "usr/lib/mosquitto/mosquitto_persist_lmdb.so")
    b.command_prefix = as_image_user() + [str(root / "usr/local/bin/docker-entrypoint.sh")]
    b.extra_env = {"MOSQUITTO_DYNSEC_PASSWORD_FILE": str(pw)}
    made.append(b)
    b.start()
    dynsec = root / "var/lib/mosquitto/dynamic-security.json"
    assert dynsec.stat().st_uid == IMAGE_UID
    assert (root / "var/lib/mosquitto/persist-lmdb/data.mdb").stat().st_uid == IMAGE_UID
    status = Path(f"/proc/{b.proc.pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{IMAGE_UID}\s", status, re.M), "the broker does not run as the image's user"

    # docs/quickstart.md: a user with the generated `client` role.
    quick = (REPO / "docs/quickstart.md").read_text()
    cmds = re.findall(r"^docker compose exec mosquitto (mosquitto_ctrl .*)$", quick, re.M)
    assert len(cmds) >= 2, cmds
    for cmd in cmds:
        args = shlex.split(cmd.replace("$ADMIN_PASSWORD", "image-admin-password"))
        args[1:1] = ["-p", str(port)]
        ok(args, stdin=subprocess.DEVNULL)
    auth = {"username": "alice", "password": "alice-password"}
    with Client(b, "alice-phone", version=V311, persistent=True, **auth) as c:
        c.subscribe("inbox/alice", 1)
    with Client(b, "alice-laptop", **auth) as p:
        p.publish_numbered("inbox/alice", range(1, 4))
    time.sleep(0.3)
    b.restart("kill")
    with Client(b, "alice-phone", version=V311, persistent=True, **auth) as c:
        assert c.session_present
        assert_sequence(seqs_of(c.collect(3)), [1, 2, 3], "image broker")
    # An ordinary user is refused by the control API; the admin (named in
    # plugin_opt_control_users) reaches it.
    for r in attack(b, "alice-console", auth, ("alice-phone", "alice")):
        assert "error" in r and "data" not in r, r
    with Client(b, "admin-console", username="admin", password="image-admin-password") as a:
        a.subscribe(RESPONSE, 1)
        resp = control(a, {"command": "getSession", "clientid": "alice-phone"})
        assert resp["data"]["username"] == "alice", resp
    # The CLI of the image with the broker's config, as the image's user:
    # stats while it runs (docs/quickstart.md), verify once it is stopped.
    r = ok(as_image_user() + [root / "usr/bin/persist-lmdb", "-c", b.conf_path, "stats"])
    assert re.search(r"^sessions\s+[1-9]", r.stdout, re.M), r.stdout
    b.stop()
    r = ok(as_image_user() + [root / "usr/bin/persist-lmdb", "-c", b.conf_path, "verify"])
    assert "no problems found" in r.stdout


@pytest.mark.parametrize("case", ["missing", "unreadable", "group-readable", "data-not-writable", "good"])
def test_entrypoint_says_what_is_wrong(runtime_root, tmpdir_broker, case):
    root = runtime_root
    d, _ = tmpdir_broker
    key = d / "key"
    data = d / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, IMAGE_UID, IMAGE_UID)
    if case != "missing":
        key.write_bytes(os.urandom(32))
        os.chown(key, 0 if case == "unreadable" else IMAGE_UID, 0)
        os.chmod(key, 0o640 if case == "group-readable" else 0o600)
    if case == "data-not-writable":
        os.chown(data, 0, 0)
    conf = d / "m.conf"
    conf.write_text(f"persistence_location {data}\nglobal_plugin /x.so\nplugin_opt_key_file {key}\n")
    r = run(as_image_user() + [root / "usr/local/bin/docker-entrypoint.sh", "echo", "started", "-c", conf])
    expect = {
        "missing": "no key file at",
        "unreadable": f"is not readable by uid {IMAGE_UID}",
        "group-readable": "mode 640",
        "data-not-writable": f"is not writable by uid {IMAGE_UID}",
    }
    if case == "good":
        assert r.returncode == 0 and r.stdout.startswith("started"), r
    else:
        assert r.returncode == 1 and "started" not in r.stdout, r
        assert r.stderr.startswith("docker-entrypoint: ") and expect[case] in r.stderr, r.stderr


# --------------------------------------------------------------------------
# cmake --install of the build under test, the docs' commands and options
# --------------------------------------------------------------------------


def test_cmake_install_installs_what_the_docs_list():
    assert (BUILD / "mosquitto_persist_lmdb.so").is_file(), f"not built: {BUILD}"
    top = make_dir("plmdb-pkg-inst-")
    try:
        ok(["cmake", "--install", BUILD, "--prefix", top / "usr"], timeout=120)
        check_installed(top / "usr")
        # A DESTDIR install keeps the prefix below it.
        ok(["cmake", "--install", BUILD, "--prefix", "/usr"], timeout=120, env={**os.environ, "DESTDIR": str(top / "dest")})
        assert files_under(top / "dest") == {"usr/" + f for f in documented_install()}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_quickstart_offline_delivery(docker_tree, tmpdir_broker):
    """The mosquitto_sub / mosquitto_pub lines of the quickstart's offline
    delivery demo, as written, against the installed minimal.conf (port
    added), with the broker killed where the quickstart stops it."""
    d, made = tmpdir_broker
    b = example_broker(docker_tree, "minimal.conf", d, made)
    b.start()
    quick = (REPO / "docs/quickstart.md").read_text()
    m = re.search(r"<!-- offline-demo -->\n```sh\n(.*?)```", quick, re.S)
    assert m, "no offline-demo block in docs/quickstart.md"
    cmds = [l.split("  #")[0].strip() for l in m.group(1).splitlines() if l.startswith("mosquitto_")]
    assert [c.split()[0] for c in cmds] == ["mosquitto_sub", "mosquitto_pub", "mosquitto_sub"], cmds
    for i, cmd in enumerate(cmds):
        args = shlex.split(cmd)
        args[1:1] = ["-p", str(b.port)]
        if i == 2:
            time.sleep(0.3)
            b.restart("kill")
        r = ok(args, timeout=20, stdin=subprocess.DEVNULL)
    assert r.stdout.strip().endswith("while you were away"), r.stdout


def test_backup_while_running_and_restore(tmpdir_broker, broker):
    """docs/operations.md: mdb_copy of the live database, taken while
    messages are being queued, is a consistent copy of what was committed
    (`persist-lmdb verify` passes on it); restored in place of the
    database, the broker comes back with exactly that state: the seeded
    session whole, and a gap-free prefix of the messages in flight."""
    cli = BUILD / "persist-lmdb"
    d, _ = tmpdir_broker
    broker.start()
    seeded = seed_data(broker, 5)
    with Client(broker, "busy-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("busy/x", 1)
    # The session and the seed committed (plugin_opt_commit_interval_ms) before the copy.
    broker.settle()
    backup = d / "backup"
    backup.mkdir()
    busy = list(range(1, 3001))
    with Client(broker, "busy-pub") as p:
        infos = [p.publish("busy/x", numbered_payload(i), qos=1, wait=False) for i in busy]
        ok(["mdb_copy", broker.db_dir, backup])
        for info in infos:
            info.wait_for_publish(60)
    assert sorted(os.listdir(backup)) == ["data.mdb"]
    r = ok([cli, "--db", backup, "--key-file", broker.key_file, "verify"])
    assert "no problems found" in r.stdout, r.stdout
    # Later messages are not in the backup.
    with Client(broker, "seed-pub") as p:
        p.publish_numbered("seed/q", range(6, 9))
    broker.settle()
    broker.stop()

    # Restore: the whole directory replaced (the old journal goes with it).
    live = broker.db_dir
    shutil.move(str(live), str(d / "replaced"))
    live.mkdir(mode=0o700)
    shutil.copy(backup / "data.mdb", live / "data.mdb")
    for p in [live, *live.iterdir()]:
        give_to_broker(p)
    broker.start()
    check_seed(broker, seeded)
    with Client(broker, "busy-sub", version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present
        n = -1
        while n != len(c.messages()):  # until nothing more comes for 0.5 s
            n = len(c.messages())
            time.sleep(0.5)
        got = seqs_of(c.messages())
    assert got == busy[:len(got)], f"not a prefix of the stream: {got[:10]}...{got[-10:]}"
    print(f"the backup held {len(got)} of {len(busy)} messages in flight")


def option_names() -> set[str]:
    src = (REPO / "plugin/options.c").read_text()
    body = src[src.index("int config_parse("):src.index("void config_free(")]
    names = set(re.findall(r'!strcmp\(k, "([a-z_]+)"\)', body))
    assert {"key_file", "db_path", "sync"} <= names, names
    return names


def test_configuration_reference_lists_every_option():
    names = option_names()
    doc = (REPO / "docs/configuration.md").read_text()
    listed = set(re.findall(r"^\| `plugin_opt_([a-z_]+)` \|", doc, re.M))
    assert listed == names, (f"accepted by plugin/options.c but not in docs/configuration.md: {sorted(names - listed)}; "
                             f"in the docs but not accepted: {sorted(listed - names)}")


def test_example_configs_use_only_real_options():
    """Every plugin_opt_* that follows the persist-lmdb global_plugin line in
    conf/*.conf and docker/mosquitto.conf, commented out or not, is an
    option of plugin/options.c."""
    names = option_names()
    files = sorted((REPO / "conf").glob("*.conf")) + [REPO / "docker/mosquitto.conf", REPO / "conf/dev.conf.in"]
    for f in files:
        ours = False
        for line in f.read_text().splitlines():
            s = line.lstrip("#").strip()
            if re.match(r"(global_)?plugin\s", s) and not line.startswith("#"):
                ours = "persist_lmdb" in s or "@PLUGIN@" in s
            m = re.match(r"plugin_opt_([a-z_]+)\s", s)
            if m and ours:
                assert m.group(1) in names, f"{f.name}: plugin_opt_{m.group(1)} is not an option"
