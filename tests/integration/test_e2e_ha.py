"""End-to-end HA control plane (issue 7 part 4): two kube-apiservers (k8s.io/kubernetes, built
by tests/e2e) sharing one etcd, each with its own trousseau process on its own socket, both
plugins pointed at a real three-node OpenBao raft cluster with mutual TLS (itlib/cluster.py).

The cluster and the two plugins are started here; tests/e2e/ha_test.go (TestHAControlPlane)
starts etcd and the apiservers and proves: a Secret written through one reads through the other;
a Transit rotation converges on both; SIGKILL of the active OpenBao node under writes through
both loses nothing; 1,000 Secrets survive both apiservers restarting together, with the Decrypt
calls each plugin served (its own /metrics) and the cold-start time. The numbers are printed as
`HA-NUMBER` lines (run with -s).

Marks: e2e, slow, plugin (like test_e2e.py). Builds the same binaries test_e2e.py builds (the Go
build cache makes that a link at most).
"""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from itlib.cluster import OpenBaoCluster
from test_e2e import BIN_DIR, BUILD_TIMEOUT, VERSION_LDFLAGS, _go, _run
from test_ha import HaPlugins

pytestmark = [pytest.mark.plugin, pytest.mark.slow, pytest.mark.e2e]

HA_TEST_TIMEOUT = 15 * 60   # go test -timeout 12m plus compiling the test binary


def go_env() -> tuple[str, dict]:
    """The go binary and the environment test_e2e.py builds with (CGO_ENABLED=0, so `go test`
    reuses the packages `go build` compiled)."""
    go = _go()
    if go is None:
        pytest.fail("go toolchain not found (export PATH=/usr/local/go/bin:$PATH)")
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(go) + os.pathsep + env.get("PATH", "")
    env["CGO_ENABLED"] = "0"
    return go, env


def build_e2e_binaries() -> tuple[str, dict]:
    """Builds tests/e2e/bin/{kube-apiserver,etcd} as test_e2e.py does; returns (go, env) with
    the binaries' paths set for the Go tests."""
    go, env = go_env()
    os.makedirs(BIN_DIR, exist_ok=True)
    for name in ("kube-apiserver", "etcd"):
        rc, out, secs = _run([go, "build", "-ldflags", VERSION_LDFLAGS,
                              "-o", os.path.join(BIN_DIR, name), f"./cmd/{name}"],
                             env, BUILD_TIMEOUT, f"go build ./cmd/{name}")
        print(f"\n[e2e] go build ./cmd/{name}: {secs:.0f} s")
        if rc != 0:
            print(out)
            pytest.fail(f"go build ./cmd/{name} exited {rc}; output above")
    env["TROUSSEAU_E2E_APISERVER_BIN"] = os.path.join(BIN_DIR, "kube-apiserver")
    env["TROUSSEAU_E2E_ETCD_BIN"] = os.path.join(BIN_DIR, "etcd")
    return go, env


def assert_go_test_passed(rc: int, out: str, name: str, *secrets: str) -> None:
    for s in secrets:
        out = out.replace(s, "<redacted>")
    print(out)
    assert rc == 0, f"go test -run {name} exited {rc}; output above"
    # the Go test skips without its environment: a skip must not look green
    assert f"--- PASS: {name} " in out, f"{name} did not run and pass; output above"


class DirectLoad:
    """Encrypt+Decrypt round trips straight on each plugin's socket, from the start of the Go
    test until 15 s after an OpenBao node dies (the Go test kills the active one and keeps its
    writers going for 20 s; stopping earlier keeps this load out of its cold-start Decrypt
    counts). kube-apiserver writes reuse a cached DEK seed and call no KMS method, so this is
    what makes the plugins' Vault path work through the failover."""

    def __init__(self, plugins, nodes):
        self.plugins, self.nodes = plugins, nodes
        self.stop = threading.Event()
        self.killed_at: float | None = None
        self.results: dict[str, list[tuple[float, float, str | None]]] = {}
        self.threads = [threading.Thread(target=self._run, args=(pl,), daemon=True)
                        for pl in plugins]
        self.threads.append(threading.Thread(target=self._watch, daemon=True))

    def _watch(self):
        while not self.stop.is_set():
            if self.killed_at is None and any(n.proc.poll() is not None for n in self.nodes):
                self.killed_at = time.monotonic()
            if self.killed_at is not None and time.monotonic() > self.killed_at + 15:
                self.stop.set()
            time.sleep(0.05)

    def _run(self, pl):
        res = self.results.setdefault(pl.name, [])
        while not self.stop.is_set():
            t0 = time.monotonic()
            err = None
            try:
                seed = os.urandom(32)
                enc = pl.encrypt(seed, uid="e2e-ha-load", timeout=6.0)
                dec = pl.decrypt(enc.ciphertext, key_id=enc.key_id,
                                 annotations=dict(enc.annotations), uid="e2e-ha-load", timeout=6.0)
                if dec.plaintext != seed:
                    err = "decrypt returned a different plaintext"
            except grpc.RpcError as e:
                err = f"{e.code().name}: {e.details()}"
            res.append((t0, time.monotonic(), err))
            time.sleep(0.05)

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=15)

    def report(self) -> tuple[int, int, int, float, list[str]]:
        """(total, failed, after the kill, longest failing window in s, first errors)."""
        total = failed = after_kill = 0
        longest = 0.0
        errors: list[str] = []
        for name, res in self.results.items():
            fail_start = None
            for t0, t1, err in res:
                total += 1
                if self.killed_at is not None and t0 >= self.killed_at:
                    after_kill += 1
                if err is None:
                    fail_start = None
                    continue
                failed += 1
                if len(errors) < 5:
                    errors.append(f"{name}: {err}")
                fail_start = t0 if fail_start is None else fail_start
                longest = max(longest, t1 - fail_start)
        return total, failed, after_kill, longest, errors


@pytest.fixture(scope="module")
def e2e_cluster(it_dir, pki):
    c = OpenBaoCluster(it_dir, pki, name="e2e-ha")
    try:
        c.setup()
        print(f"\n[e2e-ha] OpenBao cluster up: "
              + ", ".join(f"{k} {v:.1f}s" for k, v in c.timings.items()))
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def ha_plugins(plugin_bin, it_dir, kms, request):
    f = HaPlugins(plugin_bin, it_dir, kms, request.node)
    yield f
    problems = f.teardown()
    if problems:
        pytest.fail("plugin teardown: " + "; ".join(problems), pytrace=False)


def test_ha_control_plane_two_apiservers_two_plugins_openbao_raft(e2e_cluster, ha_plugins):
    go, env = build_e2e_binaries()
    c = e2e_cluster
    # each plugin lists all three nodes; a short background refresh so a rotation is seen by
    # the plugin at once (kube-apiserver's ~60 s Status poll is then the only bound)
    overrides = {"status": {"refresh_period": "2s", "stale_after": "6s"}}
    plugins = [ha_plugins.start(c, c.addresses, overrides) for _ in range(2)]
    for pl in plugins:
        assert pl.http_port, "the plugins need their operations listener for /metrics"
    active = c.active_node()
    assert active is not None, "no active OpenBao node"
    env.update({
        "TROUSSEAU_HA_SOCKETS": ",".join(pl.socket_path for pl in plugins),
        "TROUSSEAU_HA_METRICS": ",".join(f"http://127.0.0.1:{pl.http_port}/metrics"
                                         for pl in plugins),
        "TROUSSEAU_HA_BAO_NODES": ",".join(f"{n.addr}={n.proc.pid}" for n in c.nodes),
        "TROUSSEAU_HA_BAO_TLS": ",".join([c.pki.ca_file, c.pki.client_cert_file,
                                          c.pki.client_key_file]),
        "TROUSSEAU_ROTATE_CMD": active.rotate_cmd(),
    })
    with DirectLoad(plugins, c.nodes) as load:
        rc, out, secs = _run([go, "test", "-run", "^TestHAControlPlane$", "-count=1", "-v",
                              "-timeout", "12m", "."], env, HA_TEST_TIMEOUT,
                             "go test TestHAControlPlane")
    assert_go_test_passed(rc, out, "TestHAControlPlane", c.root_token, c.plugin_token)
    print(f"[e2e-ha] go test: {secs:.0f} s")
    total, failed, after_kill, longest, errors = load.report()
    print(f"[e2e-ha] HA-NUMBER direct plugin load (Encrypt+Decrypt on both sockets): {total} round "
          f"trips, {after_kill} after the kill, {failed} failed, longest failing window "
          f"{longest:.1f} s" + (f"; first errors: {errors}" if errors else ""))
    assert load.killed_at is not None, "no OpenBao node was killed"
    assert after_kill >= 20, f"only {after_kill} round trips after the kill: the load did not run"
    # the plugin's Vault timeout is 5 s and it fails over between addresses: a failing window
    # longer than kube-apiserver's 3 s KMS timeout plus one retry would be a real outage
    assert longest <= 10.0, f"round trips failed for {longest:.1f} s in a row: {errors}"
    for pl in plugins:
        assert pl.running(), f"{pl.name} died during the HA run"
