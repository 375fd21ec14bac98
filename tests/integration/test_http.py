"""The operations HTTP listener of the real binary (issue 8): /livez, /readyz, /healthz, /metrics.

Against the real OpenBao, seccomp enforce (the harness default): a syscall the listener needs and
the allowlist lacks kills the process, and the fixture teardown then fails the test.
"""
from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.request

import grpc
import pytest

from itlib.plugin import free_port

pytestmark = pytest.mark.plugin


# ------------------------------------------------------------------ helpers
def get(plugin, path: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{plugin.http_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_http(plugin, path: str, want: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(plugin, path, timeout=3.0)
            if last[0] == want:
                return last[1]
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{path} did not answer {want} within {timeout}s; last: {last}")


def samples(text: str) -> dict[str, float]:
    """Exposition text -> {'name{labels}': value} (labels as printed, in the printed order)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def kms_count(s: dict[str, float], api: str, method: str, code: str) -> float:
    for k, v in s.items():
        if k.startswith("trousseau_kms_requests_total{") and f'api="{api}"' in k and \
                f'method="{method}"' in k and f'code="{code}"' in k:
            return v
    return 0.0


def vault_count(s: dict[str, float], endpoint: str, status_class: str) -> float:
    return sum(v for k, v in s.items()
               if k.startswith("trousseau_vault_requests_total{") and
               f'endpoint="{endpoint}"' in k and f'status_class="{status_class}"' in k)


def wait_ready(plugin, timeout: float = 20.0) -> None:
    wait_http(plugin, "/readyz", 200, timeout)


# ------------------------------------------------------------------ tests
def test_metrics_count_a_known_sequence_exactly(plugin, bao):
    wait_ready(plugin)
    for i in range(5):
        enc = plugin.encrypt(os.urandom(32), uid=f"m-{i}")
    for _ in range(3):
        plugin.decrypt(enc.ciphertext, key_id=enc.key_id)
    with pytest.raises(grpc.RpcError) as e:
        plugin.decrypt(b"not a transit ciphertext", key_id=enc.key_id)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The probe's own Status calls are not KMS traffic: /livez must not change the counts.
    assert get(plugin, "/livez") == (200, "ok\n")

    status, text = get(plugin, "/metrics")
    assert status == 200
    s = samples(text)
    assert kms_count(s, "v2", "Encrypt", "OK") == 5
    assert kms_count(s, "v2", "Decrypt", "OK") == 3
    assert kms_count(s, "v2", "Decrypt", "INVALID_ARGUMENT") == 1
    assert kms_count(s, "v1beta1", "Encrypt", "OK") == 0
    # Status: only the harness's readiness call(s), never the /livez probe's.
    assert kms_count(s, "v2", "Status", "OK") >= 1
    status_before = kms_count(s, "v2", "Status", "OK")
    time.sleep(1.1)  # past the liveness cache
    assert get(plugin, "/livez")[0] == 200
    assert kms_count(samples(get(plugin, "/metrics")[1]), "v2", "Status", "OK") == status_before

    # Histogram count agrees with the counter; nothing in flight now.
    assert s['trousseau_kms_request_duration_seconds_count{api="v2",method="Encrypt"}'] == 5
    assert s['trousseau_kms_request_duration_seconds_count{api="v2",method="Decrypt"}'] == 4
    assert s.get('trousseau_kms_in_flight_requests{api="v2",method="Encrypt"}') == 0
    # Vault: exactly one transit call per successful Encrypt/Decrypt; the bad input never left.
    assert vault_count(s, "encrypt", "2xx") == 5
    assert vault_count(s, "decrypt", "2xx") == 3
    assert vault_count(s, "keys", "2xx") >= 1
    node_labels = set(re.findall(r'node="([^"]*)"', text))
    assert node_labels == {bao.addr}, node_labels
    # State read at scrape time.
    assert s["trousseau_healthy"] == 1
    assert s["trousseau_transit_key_version"] == bao.latest_version()
    assert s[f'trousseau_key_info{{key_id="{enc.key_id}"}}'] == 1
    assert 0 <= s["trousseau_vault_last_success_age_seconds"] < 10
    assert s["trousseau_vault_failovers_total"] == 0
    assert s["trousseau_vault_redirects_refused_total"] == 0
    assert s["trousseau_vault_redirects_followed_total"] == 0
    assert s["trousseau_audit_records_dropped_total"] == 0
    build = [k for k in s if k.startswith("trousseau_build_info{")]
    assert len(build) == 1 and 'tls_library="OpenSSL 3.' in build[0], build
    assert s["process_open_fds"] > 3 and s["process_resident_memory_bytes"] > 1e6
    assert s["process_threads"] >= 4
    # No uid, plaintext or ciphertext in any label.
    assert "m-0" not in text and "vault:v" not in text
    # promtool, when installed, agrees it is valid exposition text.
    promtool = "/usr/bin/promtool"
    if os.path.exists(promtool):
        import subprocess
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        # "check metrics" lints too (exit 3 for lint problems only); 1 means it did not parse.
        assert r.returncode in (0, 3), r.stdout.decode() + r.stderr.decode()


def test_livez_stays_up_while_openbao_is_down_and_readyz_recovers(plugin, bao):
    wait_ready(plugin)
    assert get(plugin, "/healthz") == (200, "ok\n")
    assert bao.stop() == 0
    body = wait_http(plugin, "/readyz", 503, timeout=15.0)
    assert body.endswith("\n") and body.count("\n") == 1
    assert "Vault" in body, body
    assert get(plugin, "/healthz")[0] == 503
    for _ in range(5):
        assert get(plugin, "/livez") == (200, "ok\n")
        time.sleep(0.3)
    s = samples(get(plugin, "/metrics")[1])
    assert s["trousseau_healthy"] == 0
    assert vault_count(s, "keys", "error") >= 1

    bao.start()
    wait_ready(plugin, timeout=30.0)
    assert get(plugin, "/livez") == (200, "ok\n")
    assert samples(get(plugin, "/metrics")[1])["trousseau_healthy"] == 1
    assert plugin.proc.poll() is None


def test_unknown_paths_and_methods(plugin):
    assert get(plugin, "/")[0] == 404
    assert get(plugin, "/metrics/extra")[0] == 404
    assert get(plugin, "/../etc/passwd")[0] == 404
    assert get(plugin, "/livez", method="POST")[0] == 405
    assert get(plugin, "/metrics", method="DELETE")[0] == 405


def test_oversize_request_is_refused(plugin):
    with socket.create_connection(("127.0.0.1", plugin.http_port), timeout=5) as c:
        c.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        c.settimeout(5)
        data = b""
        try:
            while True:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert not data.startswith(b"HTTP/1.1 200"), data[:100]
    assert get(plugin, "/livez") == (200, "ok\n")


def test_slow_clients_do_not_delay_kms_calls(plugin):
    wait_ready(plugin)
    held = []
    try:
        # More half-sent requests than the listener has worker threads.
        for _ in range(6):
            c = socket.create_connection(("127.0.0.1", plugin.http_port), timeout=5)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            held.append(c)
        t0 = time.monotonic()
        for _ in range(10):
            enc = plugin.encrypt(os.urandom(32))
            plugin.decrypt(enc.ciphertext, key_id=enc.key_id)
            plugin.status(timeout=2.0)
        elapsed = time.monotonic() - t0
        # 30 calls; generous for a loaded 2-core machine, far below what a stall would cost.
        assert elapsed < 10.0, elapsed
    finally:
        for c in held:
            c.close()
    # The request timeout frees the workers: the listener serves again.
    wait_http(plugin, "/livez", 200, timeout=15.0)


def test_listener_off_opens_no_port(plugin_factory):
    port = free_port()
    pl = plugin_factory.start({"http": {"listen": "off"}})
    assert pl.http_port is None
    assert "operations listener disabled" in pl.stderr_text()
    # Nothing of ours listens on the default port or anywhere else: check our process's sockets.
    inodes = set()
    for fd in os.listdir(f"/proc/{pl.proc.pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pl.proc.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    listening.append(cols[1])
    assert listening == [], listening
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_bad_listen_value_is_refused_at_start(plugin_factory):
    pl = plugin_factory.run_expecting_failure({"http": {"listen": "localhost:80:80"}})
    assert pl.returncode == 2
    assert "http.listen" in pl.stderr_text()


def test_port_in_use_fails_the_start_with_a_clear_message(plugin_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        pl = plugin_factory.run_expecting_failure({"http": {"listen": f"127.0.0.1:{port}"}})
    assert pl.returncode != 0
    assert "http.listen" in pl.stderr_text()


def _free_low_port() -> int | None:
    for port in range(1000, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


def test_a_port_below_1024_is_bound_before_the_privilege_drop(plugin_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: the plugin binds a privileged port before dropping to 65532")
    port = _free_low_port()
    if port is None:
        pytest.skip("no free port in 901..1000")
    pl = plugin_factory.start({"http": {"listen": f"127.0.0.1:{port}"}})
    wait_ready(pl)
    assert get(pl, "/livez") == (200, "ok\n")
    with open(f"/proc/{pl.proc.pid}/status") as f:
        assert re.search(r"^Uid:\s+65532\s", f.read(), re.M)
