"""Fixtures for the persist-lmdb integration tests (see harness.py).

    plugin     path of the built plugin (PERSIST_LMDB_BUILD, default <repo>/build)
    workdir    a fresh directory under /tmp the broker's user can use
    key_file   32 random bytes, mode 0600, owned by the broker's user
    broker     a configured, not yet started Broker; stopped at teardown (a
               broker still running then must exit cleanly)
    clients    factory: clients(client_id, **kw) -> connected Client, closed at teardown

Environment: PERSIST_LMDB_BUILD (build directory), PERSIST_LMDB_KEEP=1 (keep
a failed test's directory), PERSIST_LMDB_SHOW_LOGS=1 (print the plugin's log
lines of every test; use with -s).
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import Broker, Client, free_port, give_to_broker, plugin_path, write_key


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request) -> bool:
    return any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False)
               for w in ("setup", "call"))


@pytest.fixture(scope="session")
def plugin() -> Path:
    p = plugin_path()
    if not p.is_file():
        pytest.fail(f"plugin not built: {p} (set PERSIST_LMDB_BUILD to the build directory)")
    return p


@pytest.fixture
def workdir(request):
    d = Path(tempfile.mkdtemp(prefix="plmdb-", dir="/tmp"))
    os.chmod(d, 0o755)
    give_to_broker(d)
    yield d
    if _failed(request) and os.environ.get("PERSIST_LMDB_KEEP"):
        print(f"kept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def key_file(workdir) -> Path:
    p = workdir / "key.bin"
    write_key(p)
    return p


@pytest.fixture
def broker(request, workdir, key_file, plugin):
    b = Broker(workdir, free_port(), key_file, plugin)
    yield b
    # A broker still running at the end must shut down cleanly (status 0).
    try:
        b.stop()
    finally:
        b.close()
        _show_logs(request, b)


def _show_logs(request, b):
    if os.environ.get("PERSIST_LMDB_SHOW_LOGS"):
        for run in range(1, b.runs + 1):
            print(f"--- start {run}, exit status {b.exit_status(run)}:")
            print("\n".join(b.plugin_lines(run)))
    if _failed(request) and b.runs:
        # Shown by pytest in the failure report ("Captured stdout teardown").
        for run in range(1, b.runs + 1):
            text = b.log(run)
            print(f"--- broker log, start {run}, exit status {b.exit_status(run)} ({len(text)} chars, last 6000) ---")
            print(text[-6000:])


@pytest.fixture
def clients(broker):
    made = []

    def make(client_id, **kw) -> Client:
        c = Client(broker, client_id, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.drop() if not broker.running else c.disconnect()
        except Exception:
            pass
