"""Key rollback refused (docs/rollback.md) against a real OpenBao with raft storage: a restore
of an older snapshot under a running plugin, and a key deleted and recreated."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import grpc

from test_binding import binding_plugin, own_key_token
from test_core import rpc_error, wait_ok


def metric(pl, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{pl.http_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def http_plugin(plugin_factory, tok, key):
    return binding_plugin(plugin_factory, tok, key=key)


def test_restore_of_an_older_snapshot_is_refused(plugin_factory, bao, it_dir):
    key = "rollback-snapshot"
    if bao.api("GET", f"transit/keys/{key}").status == 404:
        bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    tok = own_key_token(bao, it_dir, key, key)
    snap = os.path.join(it_dir, "rollback.snap")
    pl = http_plugin(plugin_factory, tok, key)
    v0 = int(bao.api_ok("GET", f"transit/keys/{key}").body["data"]["latest_version"])
    wait_ok(pl)
    seed_old = os.urandom(32)
    ct_old = pl.encrypt(seed_old)
    subprocess.run([bao.bao, "operator", "raft", "snapshot", "save", snap], env=bao.cli_env(),
                   check=True, capture_output=True, timeout=60)
    bao.api_ok("POST", f"transit/keys/{key}/rotate")
    st = pl.wait_healthz(lambda s: s.key_id.endswith(f":v{v0 + 1}"), 10, "the rotation")
    seed_new = os.urandom(32)
    ct_new = pl.encrypt(seed_new)
    assert ct_new.ciphertext.startswith(f"vault:v{v0 + 1}:".encode())
    assert metric(pl, "trousseau_transit_key_rollbacks_total") == 0

    t = time.perf_counter()
    subprocess.run([bao.bao, "operator", "raft", "snapshot", "restore", "-force", snap],
                   env=bao.cli_env(), check=True, capture_output=True, timeout=60)
    bad = pl.wait_healthz(lambda s: "rolled back" in s.healthz, 20, "the rollback complaint")
    print(f"\nrollback detected {time.perf_counter() - t:.1f} s after the restore "
          f"(status.refresh_period 1s)")
    assert f"latest version {v0}, but version {v0 + 1} was seen before" in bad.healthz
    assert bad.key_id == st.key_id  # the high-water key_id stays
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rolled back" in err.details() and "docs/rollback.md" in err.details()
    # Decrypt of what the restored Vault still has continues; the lost version does not.
    assert pl.decrypt(ct_old.ciphertext, ct_old.key_id).plaintext == seed_old
    err = rpc_error(pl.decrypt, ct_new.ciphertext, ct_new.key_id)
    assert err.code() != grpc.StatusCode.OK
    assert metric(pl, "trousseau_transit_key_rollbacks_total") == 1
    assert metric(pl, "trousseau_transit_key_rollback") == 1
    assert metric(pl, "trousseau_healthy") == 0
    time.sleep(2.5)  # more checks: still counted once
    assert metric(pl, "trousseau_transit_key_rollbacks_total") == 1

    # A restarted plugin takes the current key as its baseline (memory only, documented).
    pl2 = http_plugin(plugin_factory, tok, key)
    wait_ok(pl2)
    assert pl2.decrypt(ct_old.ciphertext, ct_old.key_id).plaintext == seed_old


def test_key_deleted_and_recreated_is_refused(plugin_factory, bao, it_dir):
    key = "rollback-recreate"
    if bao.api("GET", f"transit/keys/{key}").status != 404:
        bao.api_ok("POST", f"transit/keys/{key}/config", {"deletion_allowed": True})
        bao.api_ok("DELETE", f"transit/keys/{key}")
    bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    tok = own_key_token(bao, it_dir, key, key)
    pl = http_plugin(plugin_factory, tok, key)
    wait_ok(pl)
    seed = os.urandom(32)
    ct = pl.encrypt(seed)
    time.sleep(1.2)  # creation times are whole seconds
    bao.api_ok("POST", f"transit/keys/{key}/config", {"deletion_allowed": True})
    bao.api_ok("DELETE", f"transit/keys/{key}")
    bao.api_ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    bad = pl.wait_healthz(lambda s: "replaced" in s.healthz, 10, "the recreated-key complaint")
    assert "version 1 now has creation time" in bad.healthz
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "replaced" in err.details()
    # The old seed is gone with the old key: Decrypt is Vault's answer, not a refusal of ours.
    err = rpc_error(pl.decrypt, ct.ciphertext, ct.key_id)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rolled back" not in err.details()
    assert metric(pl, "trousseau_transit_key_rollbacks_total") == 1
