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
    rc, out, secs = _run([go, "test", "-run", "^TestHAControlPlane$", "-count=1", "-v",
                          "-timeout", "12m", "."], env, HA_TEST_TIMEOUT, "go test TestHAControlPlane")
    assert_go_test_passed(rc, out, "TestHAControlPlane", c.root_token, c.plugin_token)
    print(f"[e2e-ha] go test: {secs:.0f} s")
    for pl in plugins:
        assert pl.running(), f"{pl.name} died during the HA run"
