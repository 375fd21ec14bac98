"""The key rollback mark kept across restarts (state.file, docs/rollback.md) against a real
OpenBao with raft storage, under the real seccomp filter and privilege drop: a plugin with the
file sees a rotation, is stopped, Vault is restored from the older snapshot, and the restarted
plugin still refuses Encrypt; without the file the restart accepts the restored key (the
trade-off). Also: a damaged or badly protected file stops the start, naming the file; a write
that fails while running is counted in trousseau_state_file_write_failures_total."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import grpc

from itlib.openbao import PLUGIN_GID, PLUGIN_UID
from test_binding import own_key_token
from test_core import rpc_error, wait_ok
from test_rollback import metric


def state_dir(it_dir, name):
    d = os.path.join(it_dir, name)
    os.makedirs(d, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    if os.geteuid() == 0:
        os.chown(d, PLUGIN_UID, PLUGIN_GID)
    return d


def state_plugin(plugin_factory, tok, key, state_file=None):
    cfg = {"vault": {"transit": {"key": key}, "auth": {"token_file": tok, "renew": False}}}
    if state_file is not None:
        cfg["state"] = {"file": state_file}
    return plugin_factory.start(cfg)


def test_restart_after_a_restore_still_refuses_with_the_state_file(plugin_factory, bao, it_dir):
    key = "rollback-state"
    if bao.api("GET", f"transit/keys/{key}").status == 404:
        bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    tok = own_key_token(bao, it_dir, key, key)
    path = os.path.join(state_dir(it_dir, "state-restore"), "state.json")
    if os.path.exists(path):
        os.unlink(path)
    snap = os.path.join(it_dir, "rollback-state.snap")
    v0 = int(bao.api_ok("GET", f"transit/keys/{key}").body["data"]["latest_version"])

    pl = state_plugin(plugin_factory, tok, key, path)
    wait_ok(pl)
    seed_old = os.urandom(32)
    ct_old = pl.encrypt(seed_old)
    subprocess.run([bao.bao, "operator", "raft", "snapshot", "save", snap], env=bao.cli_env(),
                   check=True, capture_output=True, timeout=60)
    bao.api_ok("POST", f"transit/keys/{key}/rotate")
    high = pl.wait_healthz(lambda s: s.key_id.endswith(f":v{v0 + 1}"), 10, "the rotation")
    assert pl.encrypt(os.urandom(32)).ciphertext.startswith(f"vault:v{v0 + 1}:".encode())
    # The file, as written after the privilege drop and under the seccomp filter.
    st = os.stat(path)
    assert st.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert st.st_uid == PLUGIN_UID
    doc = json.load(open(path))
    assert doc["format"] == 1
    mark = doc["keys"][f"transit/{key}"]
    assert mark["high_version"] == v0 + 1
    assert sorted(mark["created"], key=int) == [str(v) for v in range(1, v0 + 2)]
    assert os.listdir(os.path.dirname(path)) == ["state.json"]  # no temporary left
    assert pl.terminate() == 0

    subprocess.run([bao.bao, "operator", "raft", "snapshot", "restore", "-force", snap],
                   env=bao.cli_env(), check=True, capture_output=True, timeout=60)
    assert int(bao.api_ok("GET", f"transit/keys/{key}").body["data"]["latest_version"]) == v0

    # Restarted with the file: the first check already compares against v0+1.
    pl2 = state_plugin(plugin_factory, tok, key, path)
    bad = pl2.wait_healthz(lambda s: "rolled back" in s.healthz, 15, "the rollback complaint")
    assert f"latest version {v0}, but version {v0 + 1} was seen before" in bad.healthz
    assert f"state.file {path}" in bad.healthz
    assert bad.key_id == high.key_id
    err = rpc_error(pl2.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rolled back" in err.details() and path in err.details()
    assert pl2.decrypt(ct_old.ciphertext, ct_old.key_id).plaintext == seed_old  # Decrypt continues
    assert metric(pl2, "trousseau_transit_key_rollbacks_total") == 1
    assert metric(pl2, "trousseau_transit_key_rollback") == 1
    assert metric(pl2, "trousseau_healthy") == 0
    assert json.load(open(path))["keys"][f"transit/{key}"]["high_version"] == v0 + 1  # not lowered

    # Without the file (memory only): the restart takes the restored key as its baseline.
    pl3 = state_plugin(plugin_factory, tok, key)
    wait_ok(pl3)
    assert pl3.encrypt(os.urandom(32)).ciphertext.startswith(f"vault:v{v0}:".encode())
    assert metric(pl3, "trousseau_transit_key_rollbacks_total") == 0

    # The operator's recovery (docs/rollback.md): after checking, remove the file and restart.
    assert pl2.terminate() == 0
    os.unlink(path)
    pl4 = state_plugin(plugin_factory, tok, key, path)
    wait_ok(pl4)
    assert pl4.encrypt(os.urandom(32)).ciphertext.startswith(f"vault:v{v0}:".encode())
    pl4.wait_healthz(lambda s: os.path.exists(path), 10, "the state file written again")
    assert json.load(open(path))["keys"][f"transit/{key}"]["high_version"] == v0


def test_a_damaged_or_exposed_state_file_stops_the_start(plugin_factory, bao, it_dir):
    key = "rollback-state"
    if bao.api("GET", f"transit/keys/{key}").status == 404:
        bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    tok = own_key_token(bao, it_dir, key, key + "-bad")
    d = state_dir(it_dir, "state-bad")
    path = os.path.join(d, "state.json")

    def put(text, mode=0o600):
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        if os.geteuid() == 0:
            os.chown(path, PLUGIN_UID, PLUGIN_GID)

    def refused(expect):
        cfg = {"vault": {"transit": {"key": key}, "auth": {"token_file": tok, "renew": False}},
               "state": {"file": path}}
        pl = plugin_factory.run_expecting_failure(cfg)
        out = pl.output_text()
        assert pl.returncode == 2, out
        assert f"state.file {path}: " in out and expect in out, out

    put('{"format": 1, "keys": {"transit/k": {"high_ver')
    refused("not valid JSON")
    put('{"format": 2, "keys": {}}')
    refused("has format 2; this release reads format 1")
    put('{"format": 1, "keys": {}}', mode=0o644)
    refused("has mode 0644; it must be 0600")
    os.unlink(path)
    os.chmod(d, 0o777)
    try:
        refused("writable by group or others")
    finally:
        os.chmod(d, 0o700)


def wait_metric(pl, name, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = metric(pl, name)
        if predicate(v):
            return v
        assert time.monotonic() < deadline, f"{what}: {name} is {v} after {timeout} s"
        time.sleep(0.3)


def test_a_failing_state_file_write_is_counted_and_serving_goes_on(plugin_factory, bao, it_dir):
    key = "rollback-state-fail"
    if bao.api("GET", f"transit/keys/{key}").status == 404:
        bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    tok = own_key_token(bao, it_dir, key, key)
    d = state_dir(it_dir, "state-fail")
    path = os.path.join(d, "state.json")
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)
    pl = state_plugin(plugin_factory, tok, key, path)
    wait_ok(pl)
    pl.wait_healthz(lambda s: os.path.exists(path), 10, "the state file written")
    assert metric(pl, "trousseau_state_file_write_failures_total") == 0
    v = int(bao.api_ok("GET", f"transit/keys/{key}").body["data"]["latest_version"])

    # A non-empty directory where the file goes: the rename of every write fails (EISDIR).
    os.unlink(path)
    os.makedirs(os.path.join(path, "in-the-way"))
    bao.api_ok("POST", f"transit/keys/{key}/rotate")
    failures = wait_metric(pl, "trousseau_state_file_write_failures_total", lambda x: x >= 1, 15,
                           "a failed write counted")
    # Availability first: the new version is used, and the plugin stays healthy.
    st = pl.wait_healthz(lambda s: s.key_id.endswith(f":v{v + 1}"), 10, "the rotation")
    assert st.healthz == "ok"
    assert pl.encrypt(os.urandom(32)).ciphertext.startswith(f"vault:v{v + 1}:".encode())
    # Retried at every check (refresh_period 1 s), each failure counted.
    wait_metric(pl, "trousseau_state_file_write_failures_total", lambda x: x > failures, 15,
                "the retry counted")
    assert "state.write" in pl.stderr_text()

    # Put right: the next check writes the file; the counter keeps what it counted.
    shutil.rmtree(path)
    pl.wait_healthz(lambda s: os.path.isfile(path), 10, "the state file written again")
    assert json.load(open(path))["keys"][f"transit/{key}"]["high_version"] == v + 1
    assert metric(pl, "trousseau_state_file_write_failures_total") >= failures + 1
