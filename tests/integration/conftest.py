"""Integration harness: a real OpenBao server (mutual TLS) and the real trousseau binary.

Session fixtures: `it_dir` (a 0755 temp dir the plugin can traverse after dropping to
65532:65532), `pki`, `openbao` (initialised, unsealed, transit key + policy + token), `kms`
(generated gRPC stubs). Per-test: `bao` (the session server, restored to a normal state after the
test), `plugin_factory` and `plugin` (a running `trousseau serve`; teardown asserts exit 0 on
SIGTERM and that the socket is gone).

Env: TROUSSEAU_BIN (plugin path), TROUSSEAU_SECCOMP (seccomp.mode, default enforce; "disabled"
for a sanitizer build), TROUSSEAU_REQUIRE_BIN=1 (fail instead of skip when the binary is missing),
TROUSSEAU_IT_KEEP=1 (keep the temp dir), TROUSSEAU_SANITIZER (override the detection below).

Sanitizer builds (the binary links libasan/libubsan/libtsan, itlib.plugin.sanitizer_of): every
plugin's stderr is scanned at teardown and any sanitizer report fails the test, even when the
plugin kept running; seccomp defaults to "disabled" (the sanitizer runtimes make syscalls the
allowlist does not have); tests marked `no_sanitizer` (they assert seccomp, memory residue or
hardening properties a sanitizer runtime changes) are skipped with the reason.
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from itlib import stubs  # noqa: E402
from itlib.openbao import PLUGIN_GID, PLUGIN_UID, OpenBao  # noqa: E402
from itlib.pki import make_pki  # noqa: E402
from itlib.plugin import (DELETE, Plugin, PluginError, merge, plugin_binary,  # noqa: E402
                          sanitizer_of)
from itlib import goenv  # noqa: E402

__all__ = ["DELETE"]

# One Go build configuration for every go build/go test below (itlib/goenv.py says why).
goenv.configure()


@pytest.fixture(scope="session")
def it_dir():
    d = tempfile.mkdtemp(prefix="trousseau-it-")
    os.chmod(d, 0o755)
    # a directory the plugin may create its socket in, also after dropping privileges
    run = os.path.join(d, "run")
    os.makedirs(run, mode=0o755)
    if os.geteuid() == 0:
        os.chown(run, PLUGIN_UID, PLUGIN_GID)
    yield d
    if not os.environ.get("TROUSSEAU_IT_KEEP"):
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"\nintegration temp dir kept: {d}")


@pytest.fixture(scope="session")
def pki(it_dir):
    return make_pki(os.path.join(it_dir, "pki"), key_owner=(PLUGIN_UID, PLUGIN_GID))


@pytest.fixture(scope="session")
def openbao(it_dir, pki):
    server = OpenBao(it_dir, pki)
    try:
        server.setup()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def bao(openbao, request):
    """The session OpenBao; after the test it is running, unsealed and the token file restored."""
    request.node._trousseau_bao = openbao
    yield openbao
    openbao.ensure_ready()


@pytest.fixture(scope="session")
def kms(it_dir):
    """Generated stubs: kms.v2.pb2 / kms.v2.grpc and kms.v1.pb2 / kms.v1.grpc."""
    import types
    v2, v1 = stubs.generate(os.path.join(it_dir, "stubs"))
    return types.SimpleNamespace(v2=v2, v1=v1)


@pytest.fixture(scope="session")
def plugin_bin():
    path = plugin_binary()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        msg = (f"plugin binary {path} not built (cmake --preset release && "
               f"cmake --build --preset release, or set TROUSSEAU_BIN)")
        if os.environ.get("TROUSSEAU_REQUIRE_BIN") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


_plugin_counter = itertools.count(1)


def default_seccomp(binary: str) -> str:
    return os.environ.get("TROUSSEAU_SECCOMP", "disabled" if sanitizer_of(binary) else "enforce")


def pytest_collection_modifyitems(config, items):
    san = sanitizer_of(plugin_binary())
    if not san:
        return
    for item in items:
        m = item.get_closest_marker("no_sanitizer")
        if m is not None:
            why = m.args[0] if m.args else "asserts a property a sanitizer runtime changes"
            item.add_marker(pytest.mark.skip(reason=f"plugin built with -fsanitize={san}: {why}"))


class PluginFactory:
    def __init__(self, binary, it_dir, bao, kms, node):
        self.binary = binary
        self.it_dir = it_dir
        self.bao = bao
        self.kms = kms
        self.node = node
        self.started: list[Plugin] = []
        node._trousseau_plugins = self.started

    def default_config(self, socket_path: str) -> dict:
        b, p = self.bao, self.bao.pki
        return {
            "socket": {"path": socket_path},
            "vault": {
                "addresses": [b.addr],
                "transit": {"mount": b.mount, "key": b.key},
                "tls": {
                    "ca_file": p.ca_file,
                    "client_cert_file": p.client_cert_file,
                    "client_key_file": p.client_key_file,
                },
                "auth": {"method": "token", "token_file": b.token_file},
                "timeouts": {"connect": "2s", "request": "5s"},
            },
            "status": {"refresh_period": "1s", "stale_after": "3s"},
            "log": {"level": "debug"},
            "seccomp": {"mode": default_seccomp(self.binary)},
        }

    def make(self, overrides: dict | None = None, socket_path: str | None = None) -> Plugin:
        n = next(_plugin_counter)
        name = f"plugin-{n:03d}"
        sock = socket_path or os.path.join(self.it_dir, "run", f"p{n:03d}.sock")
        cfg = merge(self.default_config(sock), overrides or {})
        pl = Plugin(self.binary, self.it_dir, name, cfg, self.kms.v2, self.kms.v1)
        pl.socket_path = sock
        return pl

    def start(self, overrides: dict | None = None, socket_path: str | None = None,
              ready_timeout: float = 15.0, stderr_pipe: bool = False) -> Plugin:
        """Starts a plugin and waits for it to answer Status. Stopped and checked at teardown.
        stderr_pipe: stderr is a pipe nobody reads (see Plugin.drain_stderr)."""
        pl = self.make(overrides, socket_path)
        pl.spawn(stderr_pipe=stderr_pipe)
        self.started.append(pl)
        pl.wait_ready(ready_timeout)
        return pl

    def run_expecting_failure(self, overrides: dict | None = None,
                              socket_path: str | None = None, timeout: float = 10.0) -> Plugin:
        """Starts a plugin that must refuse to start; returns it after it exited."""
        pl = self.make(overrides, socket_path)
        pl.spawn()
        self.started.append(pl)
        pl.wait_exit(timeout)
        return pl

    def teardown(self) -> list[str]:
        problems = []
        for pl in self.started:
            if pl.proc is None:
                continue
            if pl.returncode is not None:      # already exited (expected failure or stopped)
                continue
            if pl.proc.poll() is not None:
                rc = pl.proc.returncode
                why = (" (a clean exit: it got SIGTERM/SIGINT from outside the harness, e.g. "
                       "another process on this machine killing 'trousseau' by name)"
                       if rc == 0 else "")
                problems.append(f"{pl.name} died during the test with exit code {rc}{why}")
                continue
            try:
                rc = pl.terminate(10.0)
            except PluginError as e:
                problems.append(f"{pl.name}: did not exit within 10 s of SIGTERM: {e}")
                continue
            if rc != 0:
                problems.append(f"{pl.name}: exit code {rc} after SIGTERM (want 0)")
            if os.path.lexists(pl.socket_path):
                problems.append(f"{pl.name}: socket {pl.socket_path} still there after exit")
        # after the exits: reports printed at exit (TSan's, LSan's) are in the files by now
        for pl in self.started:
            if pl.proc is None:
                continue
            report = pl.sanitizer_report()
            if report:
                problems.append(f"{pl.name}: sanitizer report in stderr:\n{report}")
        return problems


@pytest.fixture
def plugin_factory(plugin_bin, it_dir, bao, kms, request):
    f = PluginFactory(plugin_bin, it_dir, bao, kms, request.node)
    yield f
    problems = f.teardown()
    if problems:
        pytest.fail("plugin teardown: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def plugin(plugin_factory):
    return plugin_factory.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for pl in getattr(item, "_trousseau_plugins", []):
        rep.sections.append((f"trousseau output ({pl.name})", pl.output_text()))
    b = getattr(item, "_trousseau_bao", None)
    if b is not None:
        rep.sections.append(("openbao log (tail)", b.log_tail(30)))
