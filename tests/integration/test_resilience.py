"""Things that must keep working under the seccomp filter and with a misbehaving peer:
TLS files replaced on disk, host names resolved, and an OpenBao that hangs."""
from __future__ import annotations

import os
import shutil
import signal
import time

import grpc
import pytest

from test_core import rpc_error, wait_not_ok, wait_ok


def test_replaced_ca_file_is_reloaded_without_restart(plugin_factory, bao, it_dir):
    """Start trusting an unrelated CA (unhealthy), then replace the file with the right CA:
    the plugin reloads it (checked every 10 s) and turns healthy, same process."""
    ca = os.path.join(it_dir, "reloadable-ca.pem")
    shutil.copy(bao.pki.other_ca_file, ca)
    os.chmod(ca, 0o644)
    pl = plugin_factory.start({"vault": {"tls": {"ca_file": ca}}})
    wait_not_ok(pl)
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    tmp = ca + ".new"
    shutil.copy(bao.pki.ca_file, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, ca)  # atomic, as a Secret or cert-manager update does
    pid = pl.proc.pid
    wait_ok(pl, timeout=30)
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed
    assert pl.proc.pid == pid and pl.running()
    assert '"event":"tls.reload"' in pl.stderr_text()


@pytest.mark.no_sanitizer("asserts seccomp mode 2; the sanitizer runtimes need syscalls the "
                          "allowlist refuses")
def test_host_name_address_resolves_under_seccomp(plugin_factory, bao):
    """`localhost` goes through getaddrinfo (/etc/hosts, nsswitch) inside the filter."""
    pl = plugin_factory.start({"vault": {"addresses": [f"https://localhost:{bao.port}"]},
                               "seccomp": {"mode": "enforce"}})
    wait_ok(pl)
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed
    with open(f"/proc/{pl.proc.pid}/status") as f:
        assert "Seccomp:\t2" in f.read()


def test_hanging_openbao_never_blocks_status_and_calls_end_at_their_deadline(plugin, bao):
    wait_ok(plugin)
    os.kill(bao.proc.pid, signal.SIGSTOP)  # accepts TCP (kernel backlog) but never answers
    try:
        t0 = time.monotonic()
        err = rpc_error(plugin.encrypt, os.urandom(32), timeout=2.0)
        took = time.monotonic() - t0
        assert err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert took < 3.0, f"Encrypt took {took:.2f}s with a 2 s deadline"
        worst = 0.0
        for _ in range(50):
            t = time.monotonic()
            plugin.status(timeout=1.0)
            worst = max(worst, time.monotonic() - t)
        assert worst < 0.1, f"Status took {worst * 1000:.1f} ms while OpenBao hangs"
        wait_not_ok(plugin, timeout=15)
    finally:
        os.kill(bao.proc.pid, signal.SIGCONT)
    wait_ok(plugin, timeout=20)
    seed = os.urandom(32)
    assert plugin.decrypt(plugin.encrypt(seed).ciphertext).plaintext == seed
