"""Key rotation as the runbook (docs/rotation.md) describes it, on a key of its own so the
shared `kubernetes` key keeps its versions for the other tests."""
from __future__ import annotations

import os

import grpc

from itlib.openbao import PLUGIN_GID, PLUGIN_UID
from test_core import rpc_error, wait_ok

KEY = "rotation-runbook"


def own_key_plugin(plugin_factory, bao, it_dir):
    bao.api_ok("POST", f"transit/keys/{KEY}", {"type": "aes256-gcm96"})
    bao.api_ok("PUT", "sys/policies/acl/rotation-runbook", {"policy": f'''
path "transit/encrypt/{KEY}" {{ capabilities = ["update"] }}
path "transit/decrypt/{KEY}" {{ capabilities = ["update"] }}
path "transit/keys/{KEY}" {{ capabilities = ["read"] }}
'''})
    token = bao.api_ok("POST", "auth/token/create", {
        "policies": ["rotation-runbook"], "no_default_policy": True, "period": "1h"}).body["auth"]["client_token"]
    path = os.path.join(it_dir, "rotation-token")
    with open(path, "w") as f:
        f.write(token)
    os.chmod(path, 0o400)
    if os.geteuid() == 0:
        os.chown(path, PLUGIN_UID, PLUGIN_GID)
    return plugin_factory.start({"vault": {"transit": {"key": KEY},
                                           "auth": {"token_file": path, "renew": False}}})


def test_rotation_runbook_and_min_decryption_version(plugin_factory, bao, it_dir):
    pl = own_key_plugin(plugin_factory, bao, it_dir)
    st = wait_ok(pl)
    assert st.key_id == f"transit/{KEY}:v1"
    seed1 = os.urandom(32)
    ct1 = pl.encrypt(seed1)
    assert ct1.key_id == st.key_id and ct1.ciphertext.startswith(b"vault:v1:")

    # 1. rotate in Vault; 2. within one poll, Status and new writes carry the new key_id
    bao.api_ok("POST", f"transit/keys/{KEY}/rotate")
    st2 = pl.wait_healthz(lambda s: s.key_id.endswith(":v2"), 10, "key_id v2")
    seed2 = os.urandom(32)
    ct2 = pl.encrypt(seed2)
    assert ct2.key_id == st2.key_id and ct2.ciphertext.startswith(b"vault:v2:")
    assert pl.decrypt(ct1.ciphertext, key_id=ct1.key_id).plaintext == seed1

    # 3. (migration would rewrite ct1 under v2 here) 4. raise min_decryption_version
    bao.api_ok("POST", f"transit/keys/{KEY}/config", {"min_decryption_version": 2})
    err = rpc_error(pl.decrypt, ct1.ciphertext, key_id=ct1.key_id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert "min_decryption_version" in err.details()
    assert seed1.hex() not in err.details()
    assert pl.decrypt(ct2.ciphertext).plaintext == seed2

    # a missed Secret: lower it again and the old ciphertext reads (nothing was lost)
    bao.api_ok("POST", f"transit/keys/{KEY}/config", {"min_decryption_version": 1})
    assert pl.decrypt(ct1.ciphertext).plaintext == seed1
