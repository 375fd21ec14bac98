"""Runs the Go conformance suite (tests/conformance, k8s.io/apiserver's real KMS v2 client)
against a plugin started by the harness, with OpenBao rotation through the bao CLI."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

CONFORMANCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "conformance"))

pytestmark = [pytest.mark.plugin, pytest.mark.conformance, pytest.mark.slow]


def test_go_conformance_suite(plugin, bao):
    go = shutil.which("go") or ("/usr/local/go/bin/go"
                                if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        pytest.skip("go toolchain not found")
    if not glob.glob(os.path.join(CONFORMANCE_DIR, "**", "*_test.go"), recursive=True):
        pytest.skip(f"no Go tests in {CONFORMANCE_DIR} yet")
    env = dict(os.environ)
    # The build configuration of tests/e2e (CGO_ENABLED=0, and go.mod pins the same versions of
    # the shared modules): the packages compiled here are the ones the e2e builds reuse.
    env["CGO_ENABLED"] = "0"
    env["TROUSSEAU_SOCKET"] = plugin.socket_path
    env["TROUSSEAU_ROTATE_CMD"] = bao.rotate_cmd()
    try:
        proc = subprocess.run([go, "test", "./...", "-count=1", "-v"], cwd=CONFORMANCE_DIR,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        out = e.stdout if isinstance(e.stdout, str) else (e.stdout or b"").decode(errors="replace")
        print(out)
        pytest.fail("go test did not finish within 600 s")
    out = proc.stdout.replace(bao.root_token, "<root-token>")
    print(out)
    assert proc.returncode == 0, f"go test exited {proc.returncode}; output above"
