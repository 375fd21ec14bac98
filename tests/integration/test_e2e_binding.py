"""End to end, the copied-object attack of docs/binding.md: two kube-apiservers (each with
its own etcd) whose plugins share the session OpenBao's Transit key and differ only in
binding.cluster_id. tests/e2e/binding_test.go copies a Secret's bytes from A's etcd into B's and
checks that B cannot read it while A can. Builds tests/e2e/bin with test_e2e_ha.build_e2e_binaries
(as test_e2e.py does; slow when the Go build cache is cold); runs only that Go test."""
from __future__ import annotations

import pytest

from test_core import wait_ok
from test_e2e import TEST_TIMEOUT, _go, _run
from test_e2e_ha import build_e2e_binaries

pytestmark = [pytest.mark.plugin, pytest.mark.slow, pytest.mark.e2e]


def test_copied_secret_does_not_open_in_another_cluster(plugin_factory, bao):
    go = _go()
    if go is None:
        pytest.skip("go toolchain not found")
    a = plugin_factory.start({"binding": {"cluster_id": "cluster-a"}})
    b = plugin_factory.start({"binding": {"cluster_id": "cluster-b"}})
    assert wait_ok(a).key_id.endswith("+aad1") and wait_ok(b).key_id.endswith("+aad1")
    go, env = build_e2e_binaries()  # also sets TROUSSEAU_E2E_{APISERVER,ETCD}_BIN
    env["TROUSSEAU_BINDING_SOCKET_A"] = a.socket_path
    env["TROUSSEAU_BINDING_SOCKET_B"] = b.socket_path
    rc, out, secs = _run([go, "test", "-run", "^TestCopiedSecretDoesNotOpenInAnotherCluster$",
                          "-count=1", "-v", "-timeout", "15m", "."],
                         env, TEST_TIMEOUT, "go test (binding)")
    print(out)
    print(f"[e2e] go test: {secs:.0f} s")
    assert rc == 0, f"go test exited {rc}; output above"
    assert "--- PASS: TestCopiedSecretDoesNotOpenInAnotherCluster" in out
    assert a.running() and b.running()
