"""Seeds bound to their cluster (docs/binding.md, docs/formats.md section 3) against a real
OpenBao: two plugins that differ only in binding.cluster_id share one Transit key."""
from __future__ import annotations

import base64
import os
import time

import grpc

from itlib.openbao import PLUGIN_GID, PLUGIN_UID
from test_core import rpc_error, wait_ok

KEY = "binding-test"
ANN = "aad.trousseau.io"


def own_key_token(bao, it_dir, key, name, extra_policy=""):
    bao.api_ok("PUT", f"sys/policies/acl/{name}", {"policy": f'''
path "transit/encrypt/{key}" {{ capabilities = ["update"] }}
path "transit/decrypt/{key}" {{ capabilities = ["update"] }}
path "transit/keys/{key}" {{ capabilities = ["read"] }}
{extra_policy}'''})
    token = bao.api_ok("POST", "auth/token/create", {
        "policies": [name], "no_default_policy": True, "period": "1h"}).body["auth"]["client_token"]
    path = os.path.join(it_dir, f"{name}-token")
    if os.path.exists(path):
        os.unlink(path)  # 0400 from an earlier test
    with open(path, "w") as f:
        f.write(token)
    os.chmod(path, 0o400)
    if os.geteuid() == 0:
        os.chown(path, PLUGIN_UID, PLUGIN_GID)
    return path


def binding_plugin(plugin_factory, token_path, binding=None, key=KEY):
    cfg = {"vault": {"transit": {"key": key}, "auth": {"token_file": token_path, "renew": False}}}
    if binding is not None:
        cfg["binding"] = binding
    return plugin_factory.start(cfg)


def ensure_key(bao, key, type_="aes256-gcm96"):
    if bao.api("GET", f"transit/keys/{key}").status == 404:
        bao.api_ok("POST", f"transit/keys/{key}", {"type": type_})


def test_bound_seeds_open_only_in_their_cluster(plugin_factory, bao, it_dir):
    ensure_key(bao, KEY)
    tok = own_key_token(bao, it_dir, KEY, "binding-test")
    a = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a"})
    b = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-b"})
    old = binding_plugin(plugin_factory, tok)  # no binding: as an earlier Trousseau wrote
    st = wait_ok(a)
    assert st.key_id == f"transit/{KEY}:v1+aad1"
    assert wait_ok(old).key_id == f"transit/{KEY}:v1"

    seed = os.urandom(32)
    ct = a.encrypt(seed)
    assert ct.key_id == st.key_id
    assert ct.ciphertext.startswith(b"vault:v1:")
    assert len(ct.ciphertext) <= 1024
    assert dict(ct.annotations) == {ANN: b"1;cluster=cluster-a"}
    # Same identity: reads. Same plugin and a second one with the same cluster id.
    assert a.decrypt(ct.ciphertext, ct.key_id, dict(ct.annotations)).plaintext == seed
    a2 = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a"})
    wait_ok(a2)
    assert a2.decrypt(ct.ciphertext, ct.key_id, dict(ct.annotations)).plaintext == seed

    # The copied object: cluster B's plugin, same Vault key, refuses it and names the binding.
    err = rpc_error(b.decrypt, ct.ciphertext, ct.key_id, dict(ct.annotations))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "binding mismatch" in err.details()
    assert 'written for cluster "cluster-a"' in err.details()
    assert 'cluster "cluster-b"' in err.details()
    assert seed.hex() not in err.details()
    # Forging the annotation to claim cluster B does not help: the AAD is B's own.
    err = rpc_error(b.decrypt, ct.ciphertext, ct.key_id, {ANN: b"1;cluster=cluster-b"})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Dropping the annotation does not help either: Transit then checks no AAD and fails.
    err = rpc_error(b.decrypt, ct.ciphertext, ct.key_id, {})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Vault rejected the ciphertext" in err.details()
    # Nor does OpenBao directly without the AAD (the binding is Transit's, not ours).
    r = bao.api("POST", f"transit/decrypt/{KEY}", {"ciphertext": ct.ciphertext.decode()})
    assert r.status == 400 and "message authentication failed" in " ".join(r.errors)
    # A plugin without binding cannot read it and says what to configure.
    err = rpc_error(old.decrypt, ct.ciphertext, ct.key_id, dict(ct.annotations))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "binding.cluster_id is not configured" in err.details()

    # Old unbound ciphertexts still read in a bound plugin.
    seed_old = os.urandom(32)
    ct_old = old.encrypt(seed_old)
    assert dict(ct_old.annotations) == {}
    assert a.decrypt(ct_old.ciphertext, ct_old.key_id).plaintext == seed_old
    assert b.decrypt(ct_old.ciphertext, ct_old.key_id).plaintext == seed_old

    # v1beta1 is never bound (no annotations), so it round-trips in either cluster.
    v1 = a.v1_encrypt(b"v1 data")
    assert b.v1_decrypt(v1.cipher).plain == b"v1 data"

    # Unknown binding version: refused by name, before Vault.
    err = rpc_error(a.decrypt, ct.ciphertext, ct.key_id, {ANN: b"9;cluster=cluster-a"})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "binding version 9" in err.details()


def test_strict_mode_refuses_unbound_seeds(plugin_factory, bao, it_dir):
    ensure_key(bao, KEY)
    tok = own_key_token(bao, it_dir, KEY, "binding-test")
    old = binding_plugin(plugin_factory, tok)
    strict = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a", "strict": True})
    wait_ok(old)
    wait_ok(strict)
    seed = os.urandom(32)
    ct_old = old.encrypt(seed)
    err = rpc_error(strict.decrypt, ct_old.ciphertext, ct_old.key_id)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "binding.strict" in err.details() and "not bound" in err.details()
    err = rpc_error(strict.v1_encrypt, b"x")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "v1beta1" in err.details()
    ct = strict.encrypt(seed)
    assert strict.decrypt(ct.ciphertext, ct.key_id, dict(ct.annotations)).plaintext == seed


def test_binding_write_false_is_the_way_back(plugin_factory, bao, it_dir):
    ensure_key(bao, KEY)
    tok = own_key_token(bao, it_dir, KEY, "binding-test")
    a = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a"})
    wait_ok(a)
    seed = os.urandom(32)
    ct = a.encrypt(seed)
    back = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a", "write": False})
    st = wait_ok(back)
    assert not st.key_id.endswith("+aad1")
    assert back.decrypt(ct.ciphertext, ct.key_id, dict(ct.annotations)).plaintext == seed
    ct2 = back.encrypt(seed)
    assert dict(ct2.annotations) == {}


def test_binding_on_a_key_without_aead_is_unhealthy(plugin_factory, bao, it_dir):
    key = "binding-rsa"
    ensure_key(bao, key, "rsa-2048")
    tok = own_key_token(bao, it_dir, key, "binding-rsa")
    pl = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a"}, key=key)
    st = pl.wait_healthz(lambda s: "rsa-2048" in s.healthz, 10, "the key-type complaint")
    assert "cannot authenticate associated data" in st.healthz
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_binding_cost(plugin_factory, bao, it_dir):
    """Measures (does not assert) the added latency of binding: printed for the docs."""
    ensure_key(bao, KEY)
    tok = own_key_token(bao, it_dir, KEY, "binding-test")
    plain = binding_plugin(plugin_factory, tok)
    bound = binding_plugin(plugin_factory, tok, {"cluster_id": "cluster-a"})
    wait_ok(plain)
    wait_ok(bound)
    seed = os.urandom(32)

    def once_ms(pl):
        t = time.perf_counter()
        r = pl.encrypt(seed)
        pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations))
        return (time.perf_counter() - t) * 1000

    for _ in range(20):  # warm up connections
        once_ms(plain), once_ms(bound)
    p, b = [], []
    for _ in range(300):  # interleaved, so background load hits both alike
        p.append(once_ms(plain))
        b.append(once_ms(bound))
    p.sort(), b.sort()
    print(f"\nbinding cost (encrypt+decrypt, n=300 interleaved): median {p[150]:.2f} ms unbound, "
          f"{b[150]:.2f} ms bound; p90 {p[270]:.2f} / {b[270]:.2f} ms")
