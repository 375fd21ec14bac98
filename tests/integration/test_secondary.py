"""Redundant key-encryption keys on two Vault clusters (docs/secondary.md) against TWO
independent real OpenBao servers (each its own raft storage, unseal key, root token and plugin
token), both private to this module so that destroying the primary's data touches nothing else:
double wrapping, either server stopped under load, `required` vs `best_effort`, the heal, and a
primary destroyed and replaced by a fresh one while every earlier seed still reads through the
secondary. Prints the measured cost of double wrapping (numbers go to docs/secondary.md)."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request

import grpc
import pytest

from itlib.openbao import OpenBao
from test_core import rpc_error, wait_ok

ANN = "secondary.trousseau.io"


def _server(it_dir, pki, name):
    # A new directory each time: this module's fixture and test_e2e_secondary.py's (which imports
    # it) run in one session, and a second OpenBao on the first one's raft storage would start
    # initialised and sealed.
    d = tempfile.mkdtemp(prefix=name + "-", dir=it_dir)
    os.chmod(d, 0o755)
    s = OpenBao(d, pki)
    try:
        s.setup()
    except Exception:
        s.stop()
        raise
    return s


@pytest.fixture(scope="module")
def two_baos(it_dir, pki):
    a = _server(it_dir, pki, "bao-primary")
    b = _server(it_dir, pki, "bao-secondary")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def baos(two_baos):
    a, b = two_baos
    yield a, b
    for s in (a, b):
        s.ensure_ready()


def vault_section(s):
    p = s.pki
    return {
        "addresses": [s.addr],
        "transit": {"mount": s.mount, "key": s.key},
        "tls": {"ca_file": p.ca_file, "client_cert_file": p.client_cert_file,
                "client_key_file": p.client_key_file},
        "auth": {"method": "token", "token_file": s.token_file, "renew": False},
        "timeouts": {"connect": "1s", "request": "2s"},
    }


def start(plugin_factory, a, b, policy="best_effort", **secondary):
    v = vault_section(a)
    if b is not None:
        v["secondary"] = dict(vault_section(b), policy=policy, **secondary)
    return plugin_factory.start({"vault": v})


def readyz(pl):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{pl.http_port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Load:
    """Decrypts of known seeds (and some Encrypts) in a loop on 2 threads; records failures."""

    def __init__(self, pl, samples, encrypt=True):
        self.pl, self.samples, self.encrypt = pl, samples, encrypt
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(2)]

    def run(self, i):
        n = 0
        while not self.stop.is_set():
            seed, resp = self.samples[n % len(self.samples)]
            n += 1
            try:
                if self.encrypt and i == 1 and n % 5 == 0:
                    self.pl.encrypt(os.urandom(32), timeout=5)
                else:
                    got = self.pl.decrypt(resp.ciphertext, resp.key_id, dict(resp.annotations),
                                          timeout=5)
                    assert got.plaintext == seed
                with self.lock:
                    self.ok += 1
            except (grpc.RpcError, AssertionError) as e:
                with self.lock:
                    self.failures.append(str(getattr(e, "details", lambda: e)()))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def seeds(pl, n):
    out = []
    for _ in range(n):
        s = os.urandom(32)
        out.append((s, pl.encrypt(s)))
    return out


def test_each_seed_is_wrapped_by_both_clusters(plugin_factory, baos):
    a, b = baos
    pl = start(plugin_factory, a, b, policy="required")
    st = wait_ok(pl)
    assert st.key_id == f"{a.mount}/{a.key}:v1|{b.mount}/{b.key}:v1"
    seed = os.urandom(32)
    r = pl.encrypt(seed)
    assert r.key_id == st.key_id
    ann = r.annotations[ANN].decode()
    version, key_id, ct = ann.split(";")
    assert version == "1" and key_id == f"{b.mount}/{b.key}:v1" and ct.startswith("vault:v1:")
    assert sum(len(k) + len(v) for k, v in r.annotations.items()) < 32 * 1024
    assert len(r.ciphertext) <= 1024
    # Real Transit ciphertexts of two different keys: each cluster opens only its own.
    pa = a.api_ok("POST", f"{a.mount}/decrypt/{a.key}", {"ciphertext": r.ciphertext.decode()})
    pb = b.api_ok("POST", f"{b.mount}/decrypt/{b.key}", {"ciphertext": ct})
    import base64
    assert base64.b64decode(pa.body["data"]["plaintext"]) == seed
    assert base64.b64decode(pb.body["data"]["plaintext"]) == seed
    assert a.api("POST", f"{a.mount}/decrypt/{a.key}", {"ciphertext": ct}).status == 400
    # Rotation on the secondary changes the key_id: kube-apiserver re-seeds.
    v = b.rotate_key()
    pl.wait_healthz(lambda s: s.key_id.endswith(f"|{b.mount}/{b.key}:v{v}"), 10, "the rotation")
    assert pl.metric("trousseau_secondary_up") == 1
    assert pl.metric("trousseau_secondary_key_version") == v


def test_no_secondary_configured_is_unchanged(plugin_factory, baos):
    a, _ = baos
    pl = start(plugin_factory, a, None)
    st = wait_ok(pl)
    assert "|" not in st.key_id
    r = pl.encrypt(os.urandom(32))
    assert ANN not in r.annotations
    assert "trousseau_secondary_up" not in " ".join(pl.metrics())


def test_primary_stopped_under_load_decrypts_fall_back(plugin_factory, baos):
    a, b = baos
    pl = start(plugin_factory, a, b)
    wait_ok(pl)
    samples = seeds(pl, 20)
    with Load(pl, samples, encrypt=False) as load:
        time.sleep(1.0)
        a.stop()
        time.sleep(3.0)  # several checks: the primary is seen down
        st = pl.wait_healthz(lambda s: s.key_id.startswith("unwrapped|"), 10,
                             "the secondary-only key_id with the primary down")
        assert st.healthz == "ok"
        code, body = readyz(pl)
        assert code == 200 and "primary Vault unavailable" in body, body
        # best_effort: a new seed is wrapped by the secondary alone, and reads back.
        seed = os.urandom(32)
        r = pl.encrypt(seed)
        assert r.key_id == st.key_id and r.annotations[ANN].decode().endswith(r.ciphertext.decode())
        assert pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed
        time.sleep(1.0)
        a.start()
    assert load.failures == [], load.failures[:3]
    assert load.ok > 20
    assert pl.metric("trousseau_secondary_fallbacks_total") > 0
    # The primary back: the key_id heals to both clusters, and the secondary-only seed still
    # reads (from the secondary: the primary never wrapped it).
    healed = pl.wait_healthz(lambda s: "|" in s.key_id and not s.key_id.startswith("unwrapped|"),
                             20, "the wrapped key_id again")
    assert pl.encrypt(os.urandom(32)).key_id == healed.key_id
    assert pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed


def test_secondary_stopped_best_effort_keeps_working_and_heals(plugin_factory, baos):
    a, b = baos
    pl = start(plugin_factory, a, b, policy="best_effort")
    wrapped = wait_ok(pl).key_id
    samples = seeds(pl, 10)
    with Load(pl, samples) as load:
        time.sleep(1.0)
        b.stop()
        st = pl.wait_healthz(lambda s: s.key_id.endswith("|unwrapped"), 15, "the unwrapped key_id")
        assert st.healthz == "ok"
        code, body = readyz(pl)
        assert code == 200 and "wrapped by the primary only" in body, body
        r = pl.encrypt(os.urandom(32))
        assert r.key_id == st.key_id and ANN not in r.annotations
        time.sleep(1.0)
    assert load.failures == [], load.failures[:3]
    assert pl.metric("trousseau_secondary_unwrapped_total") >= 1
    assert pl.metric("trousseau_secondary_up") == 0
    b.start()
    pl.wait_healthz(lambda s: s.key_id == wrapped, 20, "the wrapped key_id again (heal)")
    r = pl.encrypt(os.urandom(32))
    assert r.key_id == wrapped and ANN in r.annotations
    assert readyz(pl) == (200, "ok\n")
    # Neither cluster's token is in anything the plugin printed (the outage logged errors).
    out = pl.output_text(10_000_000)
    assert b.plugin_token not in out and a.plugin_token not in out


def test_secondary_stopped_required_refuses_encrypt(plugin_factory, baos):
    a, b = baos
    pl = start(plugin_factory, a, b, policy="required")
    wait_ok(pl)
    samples = seeds(pl, 5)
    b.stop()
    st = pl.wait_healthz(lambda s: s.healthz != "ok", 15, "unhealthy")
    assert "secondary Vault" in st.healthz and "policy required" in st.healthz
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert b.addr in err.details() and "required" in err.details()
    for seed, r in samples:  # reads go on through the primary
        assert pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed
    b.start()
    wait_ok(pl, 20)
    assert ANN in pl.encrypt(os.urandom(32)).annotations


def wipe_and_recreate(server, keep_key=True):
    """Destroys the server's data entirely (raft storage, keys, tokens) and starts a fresh one at
    the same address; its transit key is new (or absent)."""
    server.stop()
    shutil.rmtree(server.storage_dir)
    server.setup()
    if not keep_key:
        server.api_ok("POST", f"{server.mount}/keys/{server.key}/config", {"deletion_allowed": True})
        server.api_ok("DELETE", f"{server.mount}/keys/{server.key}")


def test_primary_destroyed_every_seed_reads_through_the_secondary(plugin_factory, baos):
    a, b = baos
    pl = start(plugin_factory, a, b, policy="best_effort")
    wait_ok(pl)
    samples = seeds(pl, 30)

    # 1. A fresh primary without the key: "encryption key not found" counts as lost.
    wipe_and_recreate(a, keep_key=False)
    for seed, r in samples:
        assert pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed
    assert pl.metric("trousseau_secondary_fallbacks_total") >= 30
    # A seed with no copy says why it cannot be read.
    old = samples[0][1]
    err = rpc_error(pl.decrypt, old.ciphertext, old.key_id, {})
    assert "no secondary.trousseau.io copy" in err.details()

    # 2. The key recreated under the same name: the rollback guard sees it replaced; Encrypt is
    #    refused (docs/rollback.md) and older seeds read through the secondary.
    a.api_ok("POST", f"{a.mount}/keys/{a.key}", {"type": "aes256-gcm96"})
    pl.wait_healthz(lambda s: "replaced" in s.healthz or "rolled back" in s.healthz
                    or "creation time" in s.healthz, 15, "the replaced-key complaint")
    for seed, r in samples:
        assert pl.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed

    # 3. A restarted plugin has no memory of the old key: with decrypt_order secondary_first
    #    (the recovery setting) every earlier seed still reads, and new seeds are wrapped by the
    #    fresh primary and the secondary.
    pl2 = start(plugin_factory, a, b, policy="required", decrypt_order="secondary_first")
    wait_ok(pl2)
    for seed, r in samples:
        assert pl2.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed
    seed = os.urandom(32)
    r = pl2.encrypt(seed)
    assert ANN in r.annotations
    assert pl2.decrypt(r.ciphertext, r.key_id, dict(r.annotations)).plaintext == seed
    # ...and without it (the default), an old seed is refused as the primary says: no fallback
    # on "message authentication failed" from a primary not known to be replaced.
    pl3 = start(plugin_factory, a, b, policy="required")
    wait_ok(pl3)
    s0, r0 = samples[0]
    err = rpc_error(pl3.decrypt, r0.ciphertext, r0.key_id, dict(r0.annotations))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pl3.metric("trousseau_secondary_fallbacks_total") == 0


def test_double_wrap_cost(plugin_factory, baos):
    """Measures (does not assert) the added latency of double wrapping: Encrypt with and without
    the secondary, and Decrypt (primary only either way). Printed for docs/secondary.md."""
    a, b = baos
    one = start(plugin_factory, a, None)
    two = start(plugin_factory, a, b, policy="required")
    wait_ok(one)
    wait_ok(two)

    def timed(fn, n=200):
        for _ in range(10):
            fn()
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            t.append((time.perf_counter() - t0) * 1e6)
        t.sort()
        return statistics.median(t), t[int(len(t) * 0.95)]

    seed = os.urandom(32)
    r1, r2 = one.encrypt(seed), two.encrypt(seed)
    res = {
        "encrypt, primary only": timed(lambda: one.encrypt(seed)),
        "encrypt, both clusters": timed(lambda: two.encrypt(seed)),
        "decrypt, primary only": timed(lambda: one.decrypt(r1.ciphertext, r1.key_id)),
        "decrypt, with secondary configured": timed(
            lambda: two.decrypt(r2.ciphertext, r2.key_id, dict(r2.annotations))),
    }
    print("\ndouble-wrap cost (us, 200 sequential calls, p50 / p95):")
    for k, (p50, p95) in res.items():
        print(f"  {k:38s} {p50:8.0f} {p95:8.0f}")
