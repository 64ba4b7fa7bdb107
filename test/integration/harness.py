"""Integration harness for persist-lmdb: a real Mosquitto broker with the
plugin loaded, and small paho-mqtt clients to drive it.

    Broker     writes mosquitto.conf, starts/stops/kills the broker, reads its log
    Client     one paho client on its own network thread; records every message
    helpers    numbered payloads, sequence checks, key files, data-file search

Everything lives under one temporary directory per test (see conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

REPO = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"

# Generous timeouts: they only stop a hung test, they are not thresholds.
START_TIMEOUT = 20.0
# Under valgrind the leak check at exit alone can take many seconds.
STOP_TIMEOUT = 60.0 if os.environ.get("PERSIST_LMDB_VALGRIND") else 20.0
RESIGNAL_INTERVAL = 2.0
TERMINATING = re.compile(r"mosquitto version \S+ terminating")
REFUSE_TIMEOUT = 20.0
MSG_TIMEOUT = 20.0

# How long after the last acknowledged change we wait before kill -9, so the
# broker's next main-loop iteration has committed it (see Broker.settle()).
SETTLE_SECONDS = 0.3

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


def plugin_path() -> Path:
    build = Path(os.environ.get("PERSIST_LMDB_BUILD") or REPO / "build")
    return build / "mosquitto_persist_lmdb.so"


def sanitizer_env(plugin: Path) -> dict:
    """Environment for a broker loading a plugin built with AddressSanitizer
    (PERSIST_LMDB_SANITIZE): the ASan runtime must be loaded first, so it is
    preloaded into the (uninstrumented) broker. Empty for a normal build."""
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    m = re.search(r"libasan\.so[.\d]*\s*=>\s*(\S+)", out)
    if not m:
        return {}
    return {
        "LD_PRELOAD": m.group(1),
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
    }


def valgrind_prefix() -> list:
    """With PERSIST_LMDB_VALGRIND=1 the broker runs under valgrind memcheck:
    an invalid access or a definite leak makes it exit 99, which fails the
    test that stops it (a clean stop must exit 0)."""
    if not os.environ.get("PERSIST_LMDB_VALGRIND"):
        return []
    return ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite"]


def broker_account():
    """(uid, gid) the broker runs as when started by root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def give_to_broker(path: Path) -> None:
    """Makes path owned by the broker's user (when we are root)."""
    acct = broker_account()
    if acct:
        os.chown(path, *acct)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port the broker can listen on. Taken below the kernel's
    ephemeral range: a port the kernel hands out (bind to 0, or any client's
    connect) can be taken by another test process's client between this pick
    and the broker's bind, which under valgrind is seconds later."""
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    for _ in range(200):
        port = random.randrange(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {low}-{high - 1}")


def write_key(path: Path, data: bytes | None = None, mode: int = 0o600) -> bytes:
    """Writes a key file (32 random bytes unless data is given), owned by the
    broker's user, with the given mode. Returns the bytes written."""
    if data is None:
        data = os.urandom(32)
    path.write_bytes(data)
    give_to_broker(path)
    os.chmod(path, mode)
    return data


# --------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------


# The username plugin_opt_control_users names by default in the tests.
CONTROL_USER = "admin"


class BrokerError(AssertionError):
    pass


class Broker:
    """One broker configuration in its own directory.

    root/                 the test's directory (owned by the broker's user)
      data/               persistence_location
        persist-lmdb/     the plugin's default db_path
      key.bin             plugin_opt_key_file
      mosquitto.conf      rewritten on every start
      logs/run-N.log      stdout+stderr of the N-th start (log_dest stderr)

    plugin_opts is an ordered dict of plugin_opt_* (without the prefix) and
    extra_conf a list of raw lines: change them between starts as needed.
    """

    def __init__(self, root: Path, port: int, key_file: Path, plugin: Path):
        self.root = root
        self.port = port
        self.key_file = key_file
        self.plugin = plugin
        self.data_dir = root / "data"
        self.conf_path = root / "mosquitto.conf"
        self.log_dir = root / "logs"
        self.data_dir.mkdir(exist_ok=True)
        give_to_broker(self.data_dir)
        self.log_dir.mkdir(exist_ok=True)
        # control_users: the tests' admin client (control_stats) uses the API.
        self.plugin_opts: dict[str, str] = {"key_file": str(key_file), "control_users": CONTROL_USER}
        # The whole suite can run with another queue storage (memory: the
        # broker holds every queue); tests that name one keep theirs.
        if os.environ.get("PERSIST_LMDB_QUEUE_STORAGE"):
            self.plugin_opts["queue_storage"] = os.environ["PERSIST_LMDB_QUEUE_STORAGE"]
        self.persistence_location: Path | None = self.data_dir
        self.log_types = ["all"]
        # None: the broker's default (20), past which restarts behave differently.
        self.max_inflight: int | None = 1000
        self.extra_conf: list[str] = []
        self.plugins_before: list[str] = []  # config lines ahead of persist-lmdb's global_plugin
        self.extra_env: dict[str, str] = {}  # read at each start
        self.command_prefix: list[str] = []  # words before the mosquitto command (e.g. strace ...)
        self.proc: subprocess.Popen | None = None
        self.procs: list[subprocess.Popen] = []  # one per start, in order
        self.runs = 0
        self._log_file = None

    # -- configuration -----------------------------------------------------

    @property
    def db_dir(self) -> Path:
        if "db_path" in self.plugin_opts:
            return Path(self.plugin_opts["db_path"])
        return self.data_dir / "persist-lmdb"

    @property
    def data_file(self) -> Path:
        return self.db_dir / "data.mdb"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            "max_queued_messages 0",
            *([f"max_inflight_messages {self.max_inflight}"] if self.max_inflight is not None else []),
            "log_dest stderr",
            *(f"log_type {t}" for t in self.log_types),
        ]
        if self.persistence_location is not None:
            lines.append(f"persistence_location {self.persistence_location}")
        lines += self.plugins_before
        lines.append(f"global_plugin {self.plugin}")
        lines += [f"plugin_opt_{k} {v}" for k, v in self.plugin_opts.items()]
        lines += self.extra_conf
        return "\n".join(lines) + "\n"

    # -- process control ---------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> None:
        assert not self.running, "broker already running"
        self.conf_path.write_text(self.config_text())
        self.runs += 1
        if self._log_file:
            self._log_file.close()
        self._log_file = open(self.log_path, "wb")
        env = {**os.environ, **sanitizer_env(self.plugin)}
        for k, v in self.extra_env.items():
            # A preload of the test's own goes after the sanitizer's runtime.
            if k == "LD_PRELOAD" and env.get(k):
                v = f"{env[k]}:{v}"
            env[k] = v
        self.proc = subprocess.Popen(
            valgrind_prefix() + self.command_prefix + [MOSQUITTO, "-c", str(self.conf_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        self.procs.append(self.proc)

    def start(self) -> "Broker":
        """Starts the broker and waits until it accepts connections. The
        listener opens only after the plugin has restored its data."""
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise BrokerError(
                    f"broker exited with status {describe_status(rc)} during start-up; log:\n{self.log()}"
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError(f"broker did not listen within {START_TIMEOUT}s; log:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Clean shutdown (SIGTERM); the broker must exit with status 0."""
        if not self.running:
            return
        # Mosquitto 2.1 installs its SIGTERM handler before it sets its run
        # flag, and listens before either: a SIGTERM sent just after start()
        # can be lost (seen under valgrind). Until the broker logs that it is
        # terminating, the signal is sent again.
        deadline = time.monotonic() + STOP_TIMEOUT
        self.proc.send_signal(signal.SIGTERM)
        while True:
            try:
                rc = self.proc.wait(RESIGNAL_INTERVAL)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError(f"broker did not exit within {STOP_TIMEOUT}s of SIGTERM; log:\n{self.log()}")
                if not TERMINATING.search(self.log()):
                    self.proc.send_signal(signal.SIGTERM)
        if rc != 0:
            raise BrokerError(f"broker exited with status {describe_status(rc)} after SIGTERM; log tail:\n{self.log()[-4000:]}")

    def kill(self) -> None:
        """kill -9."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def restart(self, how: str = "term") -> "Broker":
        """how: 'term' (SIGTERM, clean) or 'kill' (SIGKILL)."""
        if how == "term":
            self.stop()
        elif how == "kill":
            self.kill()
        else:
            raise ValueError(how)
        return self.start()

    def wait_refused(self, timeout: float = REFUSE_TIMEOUT) -> str:
        """Starts the broker expecting it to refuse: it must exit non-zero
        within timeout. Returns the run's log."""
        self._spawn()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerError(f"broker was expected to refuse to start but kept running; log:\n{self.log()}")
        if rc == 0:
            raise BrokerError(f"broker was expected to refuse to start but exited with status 0; log:\n{self.log()}")
        return self.log()

    def assert_refuses(self, *fragments: str) -> str:
        """wait_refused(), and one of the plugin's log lines holds one of
        the fragments (case-insensitive). Returns that line."""
        log = self.wait_refused()
        try:
            return assert_plugin_said(log, *fragments)
        except AssertionError as e:
            raise AssertionError(f"broker exited with status {describe_status(self.proc.returncode)}, but {e}") from None

    def settle(self) -> None:
        """Makes sure everything acknowledged so far has been committed: a
        round trip through the broker, then a pause longer than the default
        commit interval (100 ms)."""
        with Client(self, "settle-probe", version=V5) as c:
            c.publish("persist-lmdb-test/settle", b"", qos=1)
        time.sleep(SETTLE_SECONDS)

    def exit_status(self, run: int | None = None):
        """Exit status of one start (default: the latest); None if running."""
        return self.procs[(run or self.runs) - 1].poll()

    # -- logs --------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"run-{self.runs}.log"

    def log(self, run: int | None = None) -> str:
        """The log of one start (default: the latest)."""
        path = self.log_dir / f"run-{run or self.runs}.log"
        if self._log_file:
            self._log_file.flush()
        try:
            return path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_all(self) -> str:
        return "".join(self.log(i) for i in range(1, self.runs + 1))

    def plugin_lines(self, run: int | None = None) -> list[str]:
        return [l for l in self.log(run).splitlines() if "persist-lmdb:" in l]

    def close(self) -> None:
        try:
            if self.running:
                self.kill()
        finally:
            if self._log_file:
                self._log_file.close()
                self._log_file = None


def tracee_pid(tracer: int) -> int | None:
    """The process strace started (its child)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == tracer:
            return int(d.name)
    return None


def stop_traced(broker: "Broker") -> int:
    """Clean stop of a broker running under strace: SIGTERM goes to the
    broker itself, and strace exits with the broker's status."""
    if not broker.running:
        return broker.proc.returncode
    pid = tracee_pid(broker.proc.pid)
    if pid is None:
        broker.proc.send_signal(signal.SIGTERM)
    else:
        os.kill(pid, signal.SIGTERM)
    return broker.proc.wait(STOP_TIMEOUT)


def describe_status(rc: int) -> str:
    if rc < 0:
        try:
            return f"{rc} ({signal.Signals(-rc).name})"
        except ValueError:
            pass
    return str(rc)


def lines_with(text: str, fragment: str) -> list[str]:
    """Log lines containing fragment, case-insensitively."""
    f = fragment.lower()
    return [l for l in text.splitlines() if f in l.lower()]


def assert_log_has(text: str, *fragments: str) -> None:
    """Some line of the log holds one of the fragments (case-insensitive)."""
    for frag in fragments:
        if lines_with(text, frag):
            return
    raise AssertionError(f"log has none of {fragments!r}; log:\n{text}")


def plugin_lines_with(text: str, fragment: str) -> list[str]:
    """The plugin's log lines ("persist-lmdb: ...") containing fragment,
    case-insensitively."""
    return [l for l in lines_with(text, fragment) if "persist-lmdb:" in l]


def assert_plugin_said(text: str, *fragments: str) -> str:
    """One of the plugin's log lines holds one of the fragments
    (case-insensitive); returns that line."""
    for frag in fragments:
        found = plugin_lines_with(text, frag)
        if found:
            return found[0]
    raise AssertionError(f"no persist-lmdb: log line has any of {fragments!r}; log:\n{text}")


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    sub_ids: list[int] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return parse_seq(self.payload)


class Client:
    """A paho client running on its own thread (plain loop(), so it never
    reconnects by itself and never steals a persistent session's messages).

    version V311 uses clean_session=not persistent; V5 uses
    clean_start=not persistent and the session expiry interval given.
    Every incoming message is recorded in order in .received.
    """

    def __init__(
        self,
        broker: "Broker | int",
        client_id: str,
        *,
        version: int = V5,
        persistent: bool = False,
        session_expiry: int | None = None,
        username: str | None = None,
        password: str | None = None,
        will: dict | None = None,
        max_inflight: int = 1000,
        keepalive: int = 60,
        connect: bool = True,
    ):
        self.port = broker if isinstance(broker, int) else broker.port
        self.client_id = client_id
        self.version = version
        self.persistent = persistent
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        kw = {}
        if version != V5:
            kw["clean_session"] = not persistent
        self.mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kw
        )
        self.mqtt.max_inflight_messages_set(max_inflight)
        self.mqtt.max_queued_messages_set(0)
        # paho writes on the thread that queues a packet (the test's) as well
        # as on the network thread, and both pop the same deque: two writers
        # can swap packets on the wire. One lock keeps each write pass whole.
        write = self.mqtt.loop_write
        write_lock = threading.RLock()

        def locked_write():
            with write_lock:
                return write()
        self.mqtt.loop_write = locked_write
        # Acknowledged before it is recorded: a test that saw a message and
        # then disconnects has its PUBACK on the wire ahead of the DISCONNECT.
        self.mqtt.manual_ack_set(True)
        # With manual acks paho leaves a PUBREL for a packet id it no longer
        # knows unanswered (the PUBCOMP it sent before a broker's crash was
        # never read, and the restarted broker sends PUBREL again): the
        # exchange would hold a place of the in-flight window for ever.
        # MQTT answers it with PUBCOMP.
        handle_pubrel = self.mqtt._handle_pubrel

        def answered_pubrel():
            mid = int.from_bytes(self.mqtt._in_packet["packet"][:2], "big")
            with self.mqtt._in_message_mutex:
                known = mid in self.mqtt._in_messages
            rc = handle_pubrel()
            if not known and rc == mqtt.MQTT_ERR_SUCCESS:
                rc = self.mqtt._send_pubcomp(mid)
            return rc
        self.mqtt._handle_pubrel = answered_pubrel
        if username is not None:
            self.mqtt.username_pw_set(username, password)
        if will:
            props = None
            if version == V5 and will.get("delay") is not None:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.WillDelayInterval = will["delay"]
            self.mqtt.will_set(
                will["topic"], will.get("payload", b"will"), will.get("qos", 1),
                will.get("retain", False), properties=props,
            )
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_message = self._deliver
        self.mqtt.on_subscribe = self._on_subscribe
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.connack: tuple | None = None  # (session_present, reason_code)
        self.disconnected = False
        self._subacks: dict[int, list] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if connect:
            self.connect()

    # -- callbacks (network thread) ----------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = (bool(flags.session_present), reason_code)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def _deliver(self, client, userdata, msg):
        """paho's on_message: acknowledges, then records (subclasses override
        _on_message, not this)."""
        if msg.qos > 0:
            client.ack(msg.mid, msg.qos)
        self._on_message(client, userdata, msg)

    def _on_message(self, client, userdata, msg):
        sub_ids = []
        if msg.properties is not None and hasattr(msg.properties, "SubscriptionIdentifier"):
            sub_ids = list(msg.properties.SubscriptionIdentifier)
        r = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup), sub_ids)
        with self.cond:
            self.received.append(r)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self._subacks[mid] = list(reason_codes)
            self.cond.notify_all()

    def _loop(self) -> int:
        """One pass of paho's loop on the network thread."""
        return self.mqtt.loop(timeout=0.05)

    def _run(self):
        while not self._stop.is_set():
            rc = self._loop()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                with self.cond:
                    self.disconnected = True
                    self.cond.notify_all()
                return

    def _wait(self, pred, timeout: float, what: str):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise AssertionError(f"{self.client_id}: timed out after {timeout}s waiting for {what}")

    # -- connection --------------------------------------------------------

    def connect(self, timeout: float = MSG_TIMEOUT) -> bool:
        """Connects and waits for CONNACK; returns the session-present flag."""
        kw = {}
        if self.version == V5:
            kw["clean_start"] = not self.persistent
            if self.session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry
                kw["properties"] = props
        self.connack = None
        self.disconnected = False
        self.mqtt.connect(HOST, self.port, self.keepalive, **kw)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()
        self._wait(lambda: self.connack is not None or self.disconnected, timeout, "CONNACK")
        if self.connack is None:
            raise AssertionError(f"{self.client_id}: connection closed before CONNACK")
        present, rc = self.connack
        assert not rc.is_failure, f"{self.client_id}: CONNACK refused: {rc}"
        return present

    @property
    def session_present(self) -> bool:
        return self.connack[0]

    def _join(self):
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def disconnect(self) -> None:
        """Normal DISCONNECT, then waits for the socket to close."""
        if self._thread is None:
            return
        if not self.disconnected:
            self.mqtt.disconnect()
            try:
                self._wait(lambda: self.disconnected, 5, "disconnect")
            except AssertionError:
                pass
        self._join()

    def drop(self) -> None:
        """Abnormal end: the socket is closed without DISCONNECT, so the
        broker treats the connection as lost (will, will delay, ...)."""
        self._join()
        sock = self.mqtt.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.disconnect()

    # -- subscribe / publish -----------------------------------------------

    def subscribe(
        self,
        topic: str,
        qos: int = 1,
        *,
        sub_id: int | None = None,
        no_local: bool = False,
        retain_as_published: bool = False,
        timeout: float = MSG_TIMEOUT,
    ) -> list:
        """Subscribes and waits for SUBACK; asserts the granted QoS."""
        if self.version == V5:
            props = None
            if sub_id is not None:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id
            opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published)
            rc, mid = self.mqtt.subscribe(topic, options=opts, properties=props)
        else:
            rc, mid = self.mqtt.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed to send: {rc}"
        self._wait(lambda: mid in self._subacks, timeout, f"SUBACK for {topic}")
        codes = self._subacks.pop(mid)
        granted = [c.value if hasattr(c, "value") else c for c in codes]
        assert granted == [qos], f"{self.client_id}: SUBACK for {topic} granted {granted}, wanted [{qos}]"
        return codes

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                wait: bool = True, timeout: float = MSG_TIMEOUT, properties: Properties | None = None):
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed: {info.rc}"
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"{self.client_id}: no ack for publish to {topic} within {timeout}s"
        return info

    def publish_many(self, items, timeout: float = 120.0) -> None:
        """Publishes (topic, payload, qos[, retain]) items in order, many in
        flight at once, and waits for every ack (PUBACK / PUBCOMP)."""
        infos = [self.publish(*item, wait=False) for item in items]
        deadline = time.monotonic() + timeout
        for info in infos:
            if info.is_published():
                continue
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), f"{self.client_id}: publish not acknowledged within {timeout}s"

    def publish_numbered(self, topic: str, seqs, qos: int = 1, payload_size: int = 0,
                         timeout: float = 120.0) -> list[int]:
        """One message per sequence number (payload from numbered_payload),
        acks awaited. Returns the list of sequence numbers."""
        seqs = list(seqs)
        self.publish_many([(topic, numbered_payload(s, payload_size), qos) for s in seqs], timeout)
        return seqs

    # -- receiving ---------------------------------------------------------

    def wait_for(self, count: int, timeout: float = MSG_TIMEOUT, topic: str | None = None) -> list[Received]:
        """Waits until at least count messages (on topic, if given) have been
        received; returns them all (not only count). Fails on timeout."""
        def have():
            return len(self.messages(topic)) >= count
        try:
            self._wait(have, timeout, f"{count} messages{' on ' + topic if topic else ''}")
        except AssertionError as e:
            got = self.messages(topic)
            raise AssertionError(f"{e}; got {len(got)}: {summarize_seqs(seqs_of(got))}") from None
        return self.messages(topic)

    def collect(self, count: int, timeout: float = MSG_TIMEOUT, topic: str | None = None,
                quiet: float = 0.3) -> list[Received]:
        """wait_for(count), then keeps listening for quiet seconds so that
        extra (duplicate) messages are caught too."""
        self.wait_for(count, timeout, topic)
        time.sleep(quiet)
        return self.messages(topic)

    def listen(self, seconds: float, topic: str | None = None) -> list[Received]:
        """Everything received after listening for seconds more."""
        time.sleep(seconds)
        return self.messages(topic)

    def messages(self, topic: str | None = None) -> list[Received]:
        with self.cond:
            return [m for m in self.received if topic is None or m.topic == topic]

    def clear(self) -> None:
        with self.cond:
            self.received.clear()


QUOTA_EXCEEDED = 0x97


class Acks:
    """A v5 publisher that records the reason code of each PUBACK / PUBREC."""

    def __init__(self, client):
        self.c = client
        self.codes = {}
        self.cond = threading.Condition()
        client.mqtt.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.codes[mid] = reason_code.value if hasattr(reason_code, "value") else reason_code
            self.cond.notify_all()

    def send(self, topic, payload, qos=1, properties: Properties | None = None, retain: bool = False) -> int:
        info = self.c.mqtt.publish(topic, payload, qos=qos, properties=properties, retain=retain)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.codes, 10), "no acknowledgement"
            return self.codes[info.mid]


def assert_v311_publish_refused(broker: "Broker", client_id: str, topic: str) -> None:
    """An MQTT 3.1.1 PUBACK has no reason code: a refused QoS 1 publisher is
    disconnected, unacknowledged."""
    v3 = Client(broker, client_id, version=V311)
    info = v3.mqtt.publish(topic, b"refused", qos=1)
    v3._wait(lambda: v3.disconnected, 10, "the v3 publisher's disconnection")
    try:
        acknowledged = info.is_published()
    except RuntimeError:  # paho may see the connection gone before its own publish() returns
        acknowledged = False
    assert not acknowledged
    assert f"Client {client_id}" in broker.log() and "disconnected: administrative action" in broker.log()


def control_stats(broker: "Broker") -> dict:
    """getStats on the control API."""
    with Client(broker, "stats-admin", version=V5, username=CONTROL_USER) as admin:
        admin.subscribe("$CONTROL/persist-lmdb/v1/response", 0)
        admin.publish("$CONTROL/persist-lmdb/v1", json.dumps({"commands": [{"command": "getStats"}]}), qos=1)
        reply = json.loads(admin.wait_for(1)[0].payload)
    return reply["responses"][0]["data"]


# --------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------

def cli_path() -> Path:
    """The persist-lmdb CLI of the build under test."""
    return Path(os.environ.get("PERSIST_LMDB_BUILD") or REPO / "build") / "persist-lmdb"


_BROKERS = object()


def run_cli(broker: "Broker", *args, db=_BROKERS, key=_BROKERS, check: bool = False, text: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """persist-lmdb ARGS on the broker's database with the broker's key;
    db= and key= give another path, or None to leave the option out. check:
    fail the test unless it exits 0."""
    exe = cli_path()
    assert exe.is_file(), f"CLI not built: {exe} (set PERSIST_LMDB_BUILD to the build directory)"
    cmd = [str(exe)]
    db = broker.db_dir if db is _BROKERS else db
    key = broker.key_file if key is _BROKERS else key
    if db is not None:
        cmd += ["--db", str(db)]
    if key is not None:
        cmd += ["--key-file", str(key)]
    args = [str(a) for a in args]
    r = subprocess.run(cmd + args, capture_output=True, text=text, timeout=timeout)
    if check:
        assert r.returncode == 0, f"persist-lmdb {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


# --------------------------------------------------------------------------
# Numbered messages and sequence checks
# --------------------------------------------------------------------------

_SEQ = re.compile(rb"^#(\d+)#")


def numbered_payload(seq: int, size: int = 0) -> bytes:
    """b'#<seq>#' padded with '.' to size bytes (if larger)."""
    head = b"#%d#" % seq
    return head + b"." * max(0, size - len(head))


def parse_seq(payload: bytes) -> int:
    m = _SEQ.match(payload)
    if not m:
        raise AssertionError(f"not a numbered payload: {payload[:40]!r}")
    return int(m.group(1))


def seqs_of(messages) -> list[int]:
    return [m.seq for m in messages]


def summarize_seqs(seqs: list[int], limit: int = 20) -> str:
    if len(seqs) <= limit:
        return str(seqs)
    return f"[{', '.join(map(str, seqs[:limit // 2]))}, ... {', '.join(map(str, seqs[-limit // 2:]))}] ({len(seqs)})"


@dataclass
class SequenceCheck:
    """check_sequence()'s account of the numbers one receiver got. Indexes
    are places in the list checked."""
    first: dict[int, int] = field(default_factory=dict)  # number -> index of its first arrival
    repeats: list[int] = field(default_factory=list)  # indexes of arrivals of a number already had
    # First arrivals of a number below an earlier one: (index, highest number before it).
    reordered: list[tuple[int, int]] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)  # indexes of numbers outside `possible`
    missing: list[int] = field(default_factory=list)  # required numbers never received, ascending


def check_sequence(got: list[int], required=(), possible=None) -> SequenceCheck:
    """Reads got (numbers in arrival order) as a delivery of numbered
    messages: first arrivals in ascending order, each number once, every
    required number there, none outside possible (when given: such numbers
    are left out of the order and repeat checks)."""
    c = SequenceCheck()
    last = None
    for i, n in enumerate(got):
        if possible is not None and n not in possible:
            c.unexpected.append(i)
        elif n in c.first:
            c.repeats.append(i)
        else:
            c.first[n] = i
            if last is not None and n < last:
                c.reordered.append((i, last))
            last = n if last is None else max(last, n)
    c.missing = sorted(set(required) - c.first.keys())
    return c


def assert_sequence(got: list[int], expected: list[int], what: str = "messages") -> None:
    """got == expected, with a readable account of the difference: missing
    numbers, duplicates, first place where the order differs."""
    if got == expected:
        return
    c = check_sequence(got, expected, set(expected))
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    raise AssertionError(
        f"{what}: got {len(got)}, expected {len(expected)}; "
        f"missing {summarize_seqs(c.missing)}; duplicates {summarize_seqs([got[i] for i in c.repeats])}; "
        f"unexpected {summarize_seqs(sorted({got[i] for i in c.unexpected}))}; first difference at index {first}: "
        f"got {got[first:first + 5]}, expected {expected[first:first + 5]}"
    )


def assert_no_dup_flags(messages, what: str = "messages") -> None:
    dup = [m.seq for m in messages if m.dup]
    assert not dup, f"{what}: DUP flag set on {summarize_seqs(dup)} in a flow without faults"


# --------------------------------------------------------------------------
# The data file
# --------------------------------------------------------------------------

LMDB_PAGE_HEADER = 16
LMDB_P_OVERFLOW = 0x04
# Envelope: version 2, key id 1, nonce = epoch (u32 BE, small) | counter (u64 BE, small in
# the broker thread's half of the counters, 2^63 + small in the writer thread's).
ENVELOPE_RE = re.compile(rb"\x02\x01\x00\x00[\x00-\xff][\x00-\xff][\x00\x80]\x00\x00[\x00-\xff]{5}", re.DOTALL)
ENVELOPE_HEADER = 2 + 12


def lmdb_page_size(data: bytes) -> int:
    """The page size recorded in an LMDB data file's first meta page
    (MDB_meta.mm_dbs[FREE_DBI].md_pad, after the 16-byte page header, the
    magic, the version, mm_address and mm_mapsize)."""
    magic = int.from_bytes(data[16:20], "little")
    assert magic == 0xBEEFC0DE, f"not an LMDB data file (magic {magic:#x})"
    return int.from_bytes(data[40:44], "little")


def overflow_envelopes(data: bytes) -> list[int]:
    """Offsets of sealed values that start an LMDB overflow page (a value too
    long for a leaf page: the page header is followed directly by the value)."""
    page_size = lmdb_page_size(data)
    found = []
    for off in range(0, len(data) - page_size + 1, page_size):
        flags = int.from_bytes(data[off + 10:off + 12], "little")
        if not flags & LMDB_P_OVERFLOW:
            continue
        start = off + LMDB_PAGE_HEADER
        if ENVELOPE_RE.match(data, start):
            found.append(start)
    return found


def queue_one_large_message(broker: "Broker", count: int, large: int) -> None:
    """Starts the broker, queues count numbered messages for the offline
    session tamper-sub on tamper/t, message number large with a 3000-byte
    payload (so its sealed body is the only value in an LMDB overflow page),
    and stops the broker cleanly."""
    broker.start()
    with Client(broker, "tamper-sub", version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe("tamper/t", 1)
    with Client(broker, "tamper-pub") as p:
        for s in range(1, count + 1):
            p.publish("tamper/t", numbered_payload(s, 3000 if s == large else 0), qos=1)
    broker.settle()
    broker.stop()


def flip_large_record(broker: "Broker") -> None:
    """Flips one ciphertext byte of the one sealed value in an overflow page
    (see queue_one_large_message)."""
    data = bytearray(broker.data_file.read_bytes())
    found = overflow_envelopes(bytes(data))
    assert len(found) == 1, f"expected one sealed value in an overflow page, found {len(found)} at {found}"
    data[found[0] + ENVELOPE_HEADER + 100] ^= 0x20
    broker.data_file.write_bytes(bytes(data))


def io_fault(broker: "Broker", workdir: Path) -> Path:
    """Loads the io_fault.so shim (built beside the plugin) into the broker
    from its next start; returns the shim's control file (not created).
    While that file holds eio or enospc, writes and syncs of data.mdb fail
    with that error; while it holds kill-after-publish-sent, the broker
    kills itself right after it sends a PUBLISH."""
    shim = broker.plugin.parent / "io_fault.so"
    assert shim.is_file(), f"{shim} not built"
    control = workdir / "fault"
    broker.extra_env = {"LD_PRELOAD": str(shim), "PERSIST_LMDB_FAULT_FILE": str(control)}
    return control


def chmod_tree(path: Path, dir_mode: int, file_mode: int) -> None:
    os.chmod(path, dir_mode)
    for p in path.iterdir():
        os.chmod(p, dir_mode if p.is_dir() else file_mode)


# --------------------------------------------------------------------------
# A small, known data set in the store
# --------------------------------------------------------------------------

SEED_CLIENT = "seed-sub"
SEED_TOPIC = "seed/q"
SEED_RETAINED = ("seed/retained", b"seed-retained-payload")


def seed_data(broker: Broker, count: int = 5) -> list[int]:
    """Leaves known data in the store of a running broker: a persistent
    MQTT 5 session subscribed to seed/q with messages 1..count queued, and a
    retained message. Waits until it is committed. Returns the numbers."""
    with Client(broker, SEED_CLIENT, version=V5, persistent=True, session_expiry=3600) as c:
        c.subscribe(SEED_TOPIC, 1)
    seqs = list(range(1, count + 1))
    with Client(broker, "seed-pub") as p:
        p.publish_numbered(SEED_TOPIC, seqs)
        p.publish(SEED_RETAINED[0], SEED_RETAINED[1], qos=1, retain=True)
    broker.settle()
    return seqs


def check_retained_seed(broker: Broker) -> None:
    with Client(broker, "seed-retained-check") as c:
        c.subscribe(SEED_RETAINED[0], 1)
        msgs = c.collect(1, quiet=0.2)
    assert [(m.topic, m.payload, m.retain) for m in msgs] == [(*SEED_RETAINED, True)], msgs


def check_seed(broker: Broker, expected: list[int]) -> None:
    """The data of seed_data() is all there: the retained message, and the
    session with exactly the expected queued messages, in order."""
    check_retained_seed(broker)
    with Client(broker, SEED_CLIENT, version=V5, persistent=True, session_expiry=3600) as c:
        assert c.session_present, "seeded session lost"
        if expected:
            c.wait_for(len(expected))
        msgs = c.listen(0.5)
    assert_sequence(seqs_of(msgs), expected, "seeded queue")


# --------------------------------------------------------------------------
# The database file as one without the key reads it
# --------------------------------------------------------------------------

def mdb_dump_all(db_dir: Path) -> dict[str, list[tuple[bytes, bytes]]]:
    """{database: [(key, value)]} of every named database (mdb_dump -a)."""
    r = subprocess.run(["mdb_dump", "-a", str(db_dir)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    dbs: dict[str, list[tuple[bytes, bytes]]] = {}
    name, pending, in_data = None, None, False
    for line in r.stdout.decode().splitlines():
        if line.startswith("database="):
            name = line.split("=", 1)[1]
            dbs[name] = []
        elif line == "HEADER=END":
            in_data = True
        elif line == "DATA=END":
            in_data, pending = False, None
        elif in_data and line.startswith(" "):
            data = bytes.fromhex(line.strip())
            if pending is None:
                pending = data
            else:
                dbs[name].append((pending, data))
                pending = None
    return dbs


def salts_of(dbs) -> dict[int, bytes]:
    """The salt the file keeps for each epoch (meta "salt" | epoch, unsealed)."""
    return {int.from_bytes(k[4:8], "big"): v for k, v in dbs.get("meta", [])
            if k.startswith(b"salt") and len(k) == 8}


@contextlib.contextmanager
def small_filesystem(broker: "Broker", workdir: Path, size: str):
    """A tmpfs of size (mount's units) at workdir/small, for the broker's
    user; skips the test where mounting is not allowed. On the way out the
    broker is stopped before the file system goes."""
    mnt = workdir / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN, as in the build root and CI)")
    try:
        give_to_broker(mnt)
        yield mnt
    finally:
        if broker.running:
            broker.stop()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# -- dynamic-security ------------------------------------------------------

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto/mosquitto_dynamic_security.so"
DYNSEC = "$CONTROL/dynamic-security/v1"


def dynsec_config(workdir: Path, admin: str, password: str) -> Path:
    """A new dynamic-security configuration with one admin client; the
    broker's own user can read it."""
    config = workdir / "dynsec.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(config), admin, password],
                   check=True, capture_output=True, timeout=30)
    if os.geteuid() == 0:
        acct = pwd.getpwnam("mosquitto")
        os.chown(config, acct.pw_uid, acct.pw_gid)
    return config


def dynsec(admin: Client, commands: list[dict]) -> None:
    """Sends dynamic-security commands as admin (subscribed to the response
    topic) and fails on any error."""
    admin.clear()
    admin.publish(DYNSEC, json.dumps({"commands": commands}))
    responses = json.loads(admin.wait_for(1, topic=DYNSEC + "/response")[0].payload)["responses"]
    errors = [r for r in responses if "error" in r]
    assert not errors, errors
