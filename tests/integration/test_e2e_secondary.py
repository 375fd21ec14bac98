"""End to end, docs/secondary.md: a plugin with vault.secondary (two private OpenBao servers, as
in test_secondary.py) behind a real kube-apiserver. tests/e2e/secondary_test.go writes Secrets
and stops kube-apiserver; this side then destroys the primary OpenBao's data and starts a fresh
one without the key; a new kube-apiserver must still read every Secret (through the secondary's
copy). Builds tests/e2e/bin like test_e2e.py (slow when the Go build cache is cold); runs only
that Go test."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import pytest

from test_core import wait_ok
from test_e2e import E2E_DIR, TEST_TIMEOUT, _go
from test_e2e_ha import build_e2e_binaries
from test_secondary import baos, start, two_baos, wipe_and_recreate  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.plugin, pytest.mark.slow, pytest.mark.e2e]


def test_secrets_read_after_the_primary_vault_is_replaced(plugin_factory, baos, it_dir):  # noqa: F811
    go = _go()
    if go is None:
        pytest.skip("go toolchain not found")
    a, b = baos
    pl = start(plugin_factory, a, b, policy="best_effort")
    assert "|" in wait_ok(pl).key_id
    go, env = build_e2e_binaries()  # also sets TROUSSEAU_E2E_{APISERVER,ETCD}_BIN
    sig = tempfile.mkdtemp(prefix="secondary-signal-", dir=it_dir)
    env["TROUSSEAU_SECONDARY_SOCKET"] = pl.socket_path
    env["TROUSSEAU_SECONDARY_SIGNAL_DIR"] = sig
    log = os.path.join(it_dir, "e2e-secondary.out")
    t0 = time.monotonic()
    with open(log, "w") as out_f:
        proc = subprocess.Popen(
            [go, "test", "-run", "^TestSecretsReadAfterThePrimaryVaultIsReplaced$", "-count=1",
             "-v", "-timeout", "15m", "."],
            cwd=E2E_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out_f,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + TEST_TIMEOUT
        replaced = False
        while proc.poll() is None and time.monotonic() < deadline:
            if not replaced and os.path.exists(os.path.join(sig, "written")):
                wipe_and_recreate(a, keep_key=False)
                open(os.path.join(sig, "replaced"), "w").close()
                replaced = True
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"go test did not finish within {TEST_TIMEOUT} s")
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    with open(log) as f:
        out = f.read()
    print(out)
    print(f"[e2e] go test: {time.monotonic() - t0:.0f} s")
    assert proc.returncode == 0, f"go test exited {proc.returncode}; output above"
    assert "--- PASS: TestSecretsReadAfterThePrimaryVaultIsReplaced" in out
    assert replaced
    assert pl.metric("trousseau_secondary_fallbacks_total") >= 1
    assert pl.running()
