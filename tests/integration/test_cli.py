"""The operator CLI against a real plugin and OpenBao: `trousseau status`, `encrypt`/`decrypt`
through the socket with stdin, the audit records a known call sequence leaves (with Vault's
request id), `trousseau audit` on them, and KMS calls that keep completing while the plugin's
stderr is a pipe nobody reads.
"""
from __future__ import annotations

import base64
import json
import os
import re
import urllib.request
import socket
import subprocess
import time

import grpc
import pytest

pytestmark = pytest.mark.plugin

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def cli(plugin_bin, *args, stdin: bytes = b"", timeout: float = 30.0):
    return subprocess.run([plugin_bin, *args], input=stdin, capture_output=True, timeout=timeout)


def wait_ok(plugin, timeout: float = 10.0):
    return plugin.wait_healthz(lambda s: s.healthz == "ok", timeout, 'healthz "ok"')


def audit_lines(text: str) -> list[dict]:
    out = []
    for line in text.split("\n"):
        line = line.strip()
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if j.get("type") == "audit":
            out.append(j)
    return out


# ------------------------------------------------------------------ help and usage
def test_every_command_has_help_and_exit_codes(plugin_bin):
    top = cli(plugin_bin, "--help")
    assert top.returncode == 0
    for cmd in ("status", "encrypt", "decrypt", "audit"):
        assert f"trousseau {cmd}" in top.stdout.decode()
        r = cli(plugin_bin, cmd, "--help")
        assert r.returncode == 0, r.stderr
        text = r.stdout.decode()
        assert text.startswith(f"Usage: trousseau {cmd}")
        assert "Exit codes:" in text
    bad = cli(plugin_bin, "status", "--sockett", "/x")
    assert bad.returncode == 2
    assert b"unknown flag --sockett" in bad.stderr
    assert cli(plugin_bin, "status").returncode == 2  # --socket is required


# ------------------------------------------------------------------ status
def test_status_of_a_running_plugin(plugin, plugin_bin):
    st = wait_ok(plugin)
    r = cli(plugin_bin, "status", "--socket", plugin.socket_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = r.stdout.decode()
    assert re.search(r"^  healthz\s+ok$", text, re.M), text
    assert re.search(rf"^  key_id\s+{re.escape(st.key_id)}$", text, re.M), text
    assert re.search(r"^v2 Status\s+OK in \d+\.\d ms$", text, re.M), text
    assert re.search(r"^  runtime\s+trousseau \S+$", text, re.M), text
    assert text.rstrip().endswith("result            healthy")

    j = json.loads(cli(plugin_bin, "status", "--socket", plugin.socket_path, "--output", "json")
                   .stdout)
    assert j["healthy"] is True
    assert j["v2"] == {**j["v2"], "code": "OK", "version": "v2", "healthz": "ok",
                       "key_id": st.key_id}
    assert j["v2"]["latency_ms"] > 0
    assert j["v1beta1"]["code"] == "OK"
    assert j["v1beta1"]["version"] == "v1beta1"
    assert j["v1beta1"]["runtime_name"] == "trousseau"


def test_status_of_a_dead_socket_is_exit_1(plugin_bin, it_dir):
    missing = os.path.join(it_dir, "run", "nobody-here.sock")
    r = cli(plugin_bin, "status", "--socket", missing)
    assert r.returncode == 1
    assert b"No such file" in r.stdout and b"is the plugin running" in r.stdout

    # A socket file with no listener behind it (a plugin that died without cleaning up).
    stale = os.path.join(it_dir, "run", "stale-cli.sock")
    if os.path.exists(stale):
        os.unlink(stale)
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    try:
        r = cli(plugin_bin, "status", "--socket", stale, "--timeout", "2s", "--output", "json")
        assert r.returncode == 1, r.stdout
        j = json.loads(r.stdout)
        assert j["healthy"] is False
        assert j["v2"]["code"] == "UNAVAILABLE"
        assert "nothing answers on" in j["problem"]
    finally:
        os.unlink(stale)


def test_status_of_an_unhealthy_plugin_is_exit_1(plugin_factory, plugin_bin, bao):
    pl = plugin_factory.start({"vault": {"transit": {"key": "no-such-key"}}})
    time.sleep(1.5)  # at least one background check has failed
    r = cli(plugin_bin, "status", "--socket", pl.socket_path)
    assert r.returncode == 1, r.stdout
    assert b"result            unhealthy: healthz is" in r.stdout


# ------------------------------------------------------------------ encrypt / decrypt
def test_encrypt_decrypt_round_trip_through_stdin(plugin, plugin_bin, bao):
    st = wait_ok(plugin)
    seed = os.urandom(32)
    enc = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path, "--uid", "it-cli-enc",
              stdin=seed)
    assert enc.returncode == 0, enc.stderr
    ct = base64.b64decode(enc.stdout.strip(), validate=True)
    assert ct.startswith(b"vault:v")
    assert f"key_id: {st.key_id}".encode() in enc.stderr
    # Really wrapped by Transit: OpenBao itself decrypts it.
    r = bao.api_ok("POST", f"{bao.mount}/decrypt/{bao.key}", {"ciphertext": ct.decode()},
                   token=bao.plugin_token)
    assert base64.b64decode(r.body["data"]["plaintext"]) == seed

    dec = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, "--key-id", st.key_id,
              stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == seed
    # raw ciphertext in, base64 out
    dec = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, "--output", "base64",
              stdin=ct + b"\n")
    assert dec.returncode == 0, dec.stderr
    assert base64.b64decode(dec.stdout.strip()) == seed

    # encrypt --output json | decrypt: key_id travels with it
    js = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path, "--output", "json", stdin=seed)
    assert js.returncode == 0, js.stderr
    assert json.loads(js.stdout)["key_id"] == st.key_id
    dec = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, stdin=js.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == seed


def test_v1beta1_round_trip_with_raw_bytes(plugin, plugin_bin):
    wait_ok(plugin)
    data = os.urandom(4096)
    enc = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path, "--api", "v1beta1", "--raw",
              stdin=data)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout.startswith(b"vault:v")
    dec = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, "--api", "v1beta1", "--raw",
              stdin=enc.stdout)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == data


def test_plaintext_as_an_argument_is_refused(plugin, plugin_bin):
    marker = "PLAINTEXT-ARG-5d1e"
    r = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path, marker, stdin=b"x")
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "read from stdin only" in err
    assert marker not in err and marker.encode() not in r.stdout
    r = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, "vault:v1:abc")
    assert r.returncode == 2
    assert b"stdin only" in r.stderr
    empty = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path)
    assert empty.returncode == 2
    assert b"stdin is empty" in empty.stderr


def test_cli_errors_say_code_message_and_what_to_do(plugin, plugin_bin):
    wait_ok(plugin)
    r = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, "--raw",
            stdin=b"vault:v1:" + base64.b64encode(b"\x00" * 60))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert re.search(r"^trousseau decrypt: v2 Decrypt: INVALID_ARGUMENT: .+", err, re.M), err
    assert "\n  hint: " in err
    r = cli(plugin_bin, "decrypt", "--socket", plugin.socket_path, stdin=b"%%% not base64 %%%")
    assert r.returncode == 2
    assert b"not base64" in r.stderr
    r = cli(plugin_bin, "encrypt", "--socket", plugin.socket_path + ".nope", stdin=b"seed")
    assert r.returncode == 1
    assert b"is the plugin running" in r.stderr


# ------------------------------------------------------------------ audit records and review
def to_cri(lines: list[str], split: int = 150) -> str:
    """kubelet's CRI log format; lines longer than `split` become P parts and a final F."""
    out = []
    for n, line in enumerate(lines):
        ts = f"2026-12-01T20:00:{n % 60:02d}.{n:09d}Z"
        parts = [line[i:i + split] for i in range(0, len(line), split)] or [""]
        for i, p in enumerate(parts):
            out.append(f"{ts} stderr {'F' if i == len(parts) - 1 else 'P'} {p}")
    return "\n".join(out) + "\n"


def test_audit_records_of_a_known_sequence_and_their_review(plugin, plugin_bin, bao, it_dir):
    st = wait_ok(plugin)
    version = int(st.key_id.rsplit(":v", 1)[1])
    seed = os.urandom(32)
    enc = plugin.encrypt(seed, uid="it-audit-enc-1")
    plugin.decrypt(enc.ciphertext, key_id=enc.key_id, uid="it-audit-dec-1")
    plugin.decrypt(enc.ciphertext, key_id=enc.key_id, uid='it-audit-"dec-2"\n')
    with pytest.raises(grpc.RpcError) as ei:
        plugin.decrypt(b"vault:v1:" + base64.b64encode(b"\x00" * 60), uid="it-audit-bad-1")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    plugin.encrypt(seed, uid="u" * 3000)
    assert plugin.terminate() == 0  # flushes the log queue

    raw = plugin.stderr_text()
    records = audit_lines(raw)
    by_uid = {r["uid"]: r for r in records}
    e = by_uid["it-audit-enc-1"]
    assert e["schema"] == "trousseau.audit/v1"
    assert (e["api"], e["op"], e["code"]) == ("v2", "encrypt", "OK")
    assert e["key_id"] == enc.key_id
    assert e["key_version"] == version
    assert e["vault"] == bao.addr
    assert UUID.match(e["vault_request_id"]), e
    assert e["in_bytes"] == 32 and e["out_bytes"] == len(enc.ciphertext)
    assert e["duration_us"] > 0
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", e["time"])
    d = by_uid["it-audit-dec-1"]
    assert (d["op"], d["code"], d["key_version"]) == ("decrypt", "OK", version)
    assert UUID.match(d["vault_request_id"]) and d["vault_request_id"] != e["vault_request_id"]
    assert d["out_bytes"] == 32
    assert by_uid['it-audit-"dec-2"\n']["code"] == "OK"
    bad = by_uid["it-audit-bad-1"]
    assert bad["code"] == "INVALID_ARGUMENT" and bad["detail"]
    assert "vault_request_id" not in bad
    clipped = [r for r in records if r.get("uid_clipped")]
    assert len(clipped) == 1 and clipped[0]["uid"] == "u" * 256 and clipped[0]["uid_bytes"] == 3000
    assert seed.hex() not in raw and base64.b64encode(seed).decode() not in raw

    # The review of exactly these records.
    path = os.path.join(it_dir, "audit-known.log")
    with open(path, "w") as f:
        f.write(raw)
    r = cli(plugin_bin, "audit", path, "--output", "json")
    assert r.returncode == 0, r.stderr
    rv = json.loads(r.stdout)
    assert rv["input"]["records"] == 5
    assert rv["input"]["malformed"] == 0
    assert rv["by_op"]["v2 encrypt"]["calls"] == 2
    assert rv["by_op"]["v2 decrypt"] == {**rv["by_op"]["v2 decrypt"], "calls": 3, "errors": 1}
    assert rv["by_code"] == {"OK": 4, "INVALID_ARGUMENT": 1}
    assert rv["by_vault"] == {bao.addr: 4}
    assert rv["with_vault_request_id"] == 4
    key = enc.key_id.rsplit(":v", 1)[0]
    kv = rv["decrypt_key_versions"][key]
    assert kv["lowest_version_decrypted"] == version
    assert kv["versions"][f"v{version}"]["decrypts"] == 2
    # --since/--until: a duration back from now, and an RFC 3339 time
    recent = json.loads(cli(plugin_bin, "audit", path, "--since", "1h", "--output", "json").stdout)
    assert recent["input"]["records"] == 5
    old = json.loads(cli(plugin_bin, "audit", path, "--until", "2000-01-01T00:00:00Z",
                         "--output", "json").stdout)
    assert old["input"]["records"] == 0 and old["input"]["outside_period"] == 5
    assert cli(plugin_bin, "audit", path, "--since", "last tuesday").returncode == 2
    assert cli(plugin_bin, "audit", os.path.join(it_dir, "no-such.log")).returncode == 1
    text = cli(plugin_bin, "audit", path).stdout.decode()
    assert f"lowest version still decrypted: v{version}" in text
    assert re.search(r"^  v2 decrypt\s+3\s+1\s", text, re.M), text

    # The same lines as kubelet writes them (CRI, long lines split), via stdin, plus junk.
    cri = to_cri([ln for ln in raw.split("\n") if ln]) + "garbage line\n2026-12-01T20:00:00Z stderr F {broken\n"
    r = cli(plugin_bin, "audit", "--output", "json", stdin=cri.encode())
    assert r.returncode == 0, r.stderr
    rc = json.loads(r.stdout)
    assert rc["input"]["records"] == 5
    assert rc["input"]["malformed"] == 2
    assert rc["by_code"] == rv["by_code"]


def test_kms_calls_complete_while_stderr_is_a_pipe_nobody_reads(plugin_factory, plugin_bin,
                                                                  it_dir):
    pl = plugin_factory.start({"log": {"queue_lines": 64}}, stderr_pipe=True)
    wait_ok(pl)
    calls = 1000
    t0 = time.monotonic()
    for i in range(calls):
        r = pl.encrypt(b"s" * 32, uid=f"pipe-{i}", timeout=10.0)
        assert r.ciphertext.startswith(b"vault:v")
    elapsed = time.monotonic() - t0
    # The drops are visible to monitoring while stderr is still stuck (the alert's source).
    with urllib.request.urlopen(f"http://127.0.0.1:{pl.http_port}/metrics", timeout=10) as resp:
        exposition = resp.read().decode()
    m = re.search(r"^trousseau_audit_records_dropped_total (\S+)$", exposition, re.M)
    assert m, exposition[:2000]
    dropped_metric = float(m.group(1))
    assert dropped_metric > 0
    # Now the log reader comes back: the queued lines and the drop report arrive.
    drainer = pl.drain_stderr()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and '"log.dropped"' not in pl.stderr_text():
        time.sleep(0.1)
    assert '"log.dropped"' in pl.stderr_text(), pl.output_text()
    assert pl.terminate() == 0
    drainer.join(timeout=10)
    text = pl.stderr_text()
    seen = sum(1 for r in audit_lines(text) if r["uid"].startswith("pipe-"))
    reports = [json.loads(ln) for ln in text.split("\n")
               if ln.startswith("{") and '"log.dropped"' in ln]
    dropped = sum(r["dropped_audit_records"] for r in reports)
    assert dropped > 0
    # Every call is accounted for: written, or dropped and counted.
    assert seen + dropped == calls, (seen, dropped, elapsed)
    assert dropped_metric == dropped  # no audit record was dropped after the load

    path = os.path.join(it_dir, "audit-pipe.log")
    with open(path, "w") as f:
        f.write(text)
    review = cli(plugin_bin, "audit", path).stdout.decode()
    assert f"{dropped} audit records were dropped by the plugin" in review


def test_sigterm_with_a_stuck_stderr_still_exits_cleanly(plugin_factory):
    pl = plugin_factory.start({"log": {"queue_lines": 64}}, stderr_pipe=True)
    wait_ok(pl)
    for i in range(300):  # fills the pipe and the queue
        pl.encrypt(b"s" * 32, uid=f"stuck-{i}", timeout=10.0)
    t0 = time.monotonic()
    assert pl.terminate(timeout=15.0) == 0  # the flush wait is bounded (2 s), then exit 0
    assert time.monotonic() - t0 < 10.0
    assert not os.path.exists(pl.socket_path)
    pl.stderr_pipe.close()
