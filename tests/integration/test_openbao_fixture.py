"""The harness itself, against the real OpenBao: no plugin needed.

Also pins down the OpenBao behaviours the plugin's error mapping relies on (HTTP codes and error
bodies for a bad token, a tampered ciphertext, a sealed server, a too-old key version).
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import ssl
import stat
import subprocess

import pytest

from itlib.openbao import PLUGIN_UID, find_bao


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_bao_binary_comes_from_the_venv():
    path = find_bao()
    out = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "OpenBao v2.7.2" in out.stdout


def test_server_is_active_on_loopback_only(bao):
    r = bao.api("GET", "sys/health", token=None)
    assert r.status == 200
    assert r.body["initialized"] is True and r.body["sealed"] is False
    assert bao.addr.startswith("https://127.0.0.1:")
    assert bao.http_addr.startswith("http://127.0.0.1:")


def test_tls_listener_serves_test_server_cert_with_expected_pin(bao, pki):
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    ctx.load_cert_chain(pki.client_cert_file, pki.client_key_file)
    with socket.create_connection(("127.0.0.1", bao.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pki.server_spki_pin == "sha256//" + b64(hashlib.sha256(spki).digest())
    assert pki.other_spki_pin != pki.server_spki_pin
    assert pki.other_spki_pin.startswith("sha256//") and len(pki.other_spki_pin) == 8 + 44


def test_tls_listener_requires_a_client_certificate(bao, pki):
    ctx = ssl.create_default_context(cafile=pki.ca_file)  # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        conn = http.client.HTTPSConnection("127.0.0.1", bao.port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/v1/sys/health")
            conn.getresponse().read()
        finally:
            conn.close()


def test_tls_listener_rejects_a_client_trusting_another_ca(bao, pki):
    ctx = ssl.create_default_context(cafile=pki.other_ca_file)
    ctx.load_cert_chain(pki.client_cert_file, pki.client_key_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", bao.port), timeout=5) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()


def test_plain_http_listener_speaks_http(bao):
    conn = http.client.HTTPConnection("127.0.0.1", bao.http_port, timeout=5)
    try:
        conn.request("GET", "/v1/sys/health")
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 200


def test_token_file_is_readable_by_the_plugin_user_only(bao, it_dir):
    st = os.stat(bao.token_file)
    assert stat.S_IMODE(st.st_mode) in (0o400, 0o440)
    if os.geteuid() == 0:
        assert st.st_uid == PLUGIN_UID
    with open(bao.token_file) as f:
        assert f.read().strip() == bao.plugin_token
    # every ancestor directory is traversable by others (the plugin drops to 65532)
    d = os.path.dirname(bao.token_file)
    while d != "/":
        assert os.stat(d).st_mode & 0o001, d
        d = os.path.dirname(d)


def test_plugin_token_has_only_the_trousseau_policy(bao):
    r = bao.api_ok("POST", "auth/token/lookup", {"token": bao.plugin_token})
    data = r.body["data"]
    assert data["policies"] == ["trousseau"]
    assert data["renewable"] is True
    assert data["period"] == 3600


def test_plugin_token_capabilities_are_exact(bao):
    t = bao.plugin_token
    paths = {
        "transit/encrypt/kubernetes": ["update"],
        "transit/decrypt/kubernetes": ["update"],
        "transit/keys/kubernetes": ["read"],
        "auth/token/lookup-self": ["read"],
        "auth/token/renew-self": ["update"],
        "transit/encrypt/other": ["deny"],
        "transit/keys/kubernetes/rotate": ["deny"],
        "sys/mounts": ["deny"],
    }
    r = bao.api_ok("POST", "sys/capabilities", {"token": t, "paths": list(paths)})
    for p, want in paths.items():
        assert sorted(r.body[p]) == want, p


def test_plugin_token_can_do_the_plugin_calls_and_nothing_else(bao):
    t = bao.plugin_token
    enc = bao.api_ok("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"seed")}, token=t)
    ct = enc.body["data"]["ciphertext"]
    assert ct.startswith(f"vault:v{bao.latest_version()}:")
    dec = bao.api_ok("POST", "transit/decrypt/kubernetes", {"ciphertext": ct}, token=t)
    assert base64.b64decode(dec.body["data"]["plaintext"]) == b"seed"
    assert bao.api("GET", "transit/keys/kubernetes", token=t).status == 200
    assert bao.api("GET", "auth/token/lookup-self", token=t).status == 200
    renew = bao.api("POST", "auth/token/renew-self", {"increment": "1h"}, token=t)
    assert renew.status == 200 and renew.body["auth"]["renewable"] is True
    # upsert trap: no `create`, so a missing key is not created
    up = bao.api("POST", "transit/encrypt/not-there", {"plaintext": b64(b"x")}, token=t)
    assert up.status == 403
    assert bao.api("POST", "transit/keys/kubernetes/rotate", token=t).status == 403


def test_rotate_cmd_rotates_with_the_bao_cli(bao):
    before = bao.latest_version()
    out = subprocess.run(bao.rotate_cmd(), shell=True, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert bao.latest_version() == before + 1


def test_rotate_key_method(bao):
    before = bao.latest_version()
    assert bao.rotate_key() == before + 1


def test_stop_start_keeps_storage_and_unseals(bao):
    t = bao.plugin_token
    ct = bao.api_ok("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"persist")},
                    token=t).body["data"]["ciphertext"]
    old_pid = bao.proc.pid
    assert bao.stop() == 0
    with pytest.raises(OSError):
        bao.api("GET", "sys/health", token=None, timeout=2)
    bao.start()
    # A new process (no timing assertion: the fixture's own bounded waits already fail a slow
    # restart, with a message naming the step), unsealed and active, with the old storage.
    assert bao.proc.pid != old_pid
    h = bao.api("GET", "sys/health", token=None)
    assert h.status == 200 and h.body["sealed"] is False, (h.status, h.body)
    dec = bao.api_ok("POST", "transit/decrypt/kubernetes", {"ciphertext": ct}, token=t)
    assert base64.b64decode(dec.body["data"]["plaintext"]) == b"persist"


def test_sealed_server_answers_503(bao):
    t = bao.plugin_token
    bao.seal()
    try:
        h = bao.api("GET", "sys/health", token=None)
        assert h.status == 503 and h.body["sealed"] is True
        r = bao.api("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"x")}, token=t)
        print(f"\nsealed encrypt: HTTP {r.status} {r.raw!r}")
        assert r.status == 503
        assert any("sealed" in e for e in r.errors)
    finally:
        bao.unseal()
    assert bao.api("GET", "sys/health", token=None).status == 200


def test_bad_token_is_403_permission_denied(bao):
    r = bao.api("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"x")},
                token="s.not-a-real-token")
    print(f"\nbad token: HTTP {r.status} {r.raw!r}")
    assert r.status == 403
    assert any("permission denied" in e for e in r.errors)


def test_revoked_token_is_403(bao):
    t = bao.create_plugin_token()
    assert bao.api("GET", "auth/token/lookup-self", token=t).status == 200
    bao.revoke_token(t)
    r = bao.api("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"x")}, token=t)
    print(f"\nrevoked token: HTTP {r.status} {r.raw!r}")
    assert r.status == 403


def test_tampered_ciphertext_is_400(bao):
    t = bao.plugin_token
    ct = bao.api_ok("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"s" * 32)},
                    token=t).body["data"]["ciphertext"]
    prefix, body = ct.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 0x01
    bad = prefix + ":" + b64(bytes(raw))
    r = bao.api("POST", "transit/decrypt/kubernetes", {"ciphertext": bad}, token=t)
    print(f"\ntampered: HTTP {r.status} {r.raw!r}")
    assert r.status == 400
    assert r.errors
    for junk in ("garbage", "vault:vX:abc", "vault:v1:!!!"):
        r = bao.api("POST", "transit/decrypt/kubernetes", {"ciphertext": junk}, token=t)
        print(f"malformed {junk!r}: HTTP {r.status} {r.raw!r}")
        assert r.status == 400


def test_version_below_min_decryption_version_is_400(bao):
    # a separate key so the plugin's key keeps decrypting everything
    bao.api_ok("POST", "transit/keys/probe-min-version", {"type": "aes256-gcm96"})
    old = bao.api_ok("POST", "transit/encrypt/probe-min-version",
                     {"plaintext": b64(b"old")}).body["data"]["ciphertext"]
    bao.api_ok("POST", "transit/keys/probe-min-version/rotate")
    bao.api_ok("POST", "transit/keys/probe-min-version/config", {"min_decryption_version": 2})
    r = bao.api("POST", "transit/decrypt/probe-min-version", {"ciphertext": old})
    print(f"\nbelow min_decryption_version: HTTP {r.status} {r.raw!r}")
    assert r.status == 400
    assert r.errors
    # a version from the future
    future = old.replace("vault:v1:", "vault:v9:")
    r = bao.api("POST", "transit/decrypt/probe-min-version", {"ciphertext": future})
    print(f"future version: HTTP {r.status} {r.raw!r}")
    assert r.status == 400


def test_generated_stubs_do_not_collide(kms):
    assert kms.v2.pb2.EncryptRequest is not kms.v1.pb2.EncryptRequest
    assert "plaintext" in kms.v2.pb2.EncryptRequest.DESCRIPTOR.fields_by_name
    assert "plain" in kms.v1.pb2.EncryptRequest.DESCRIPTOR.fields_by_name
    assert hasattr(kms.v2.grpc, "KeyManagementServiceStub")
    assert hasattr(kms.v1.grpc, "KeyManagementServiceStub")


def test_fixture_timings_are_reasonable(openbao):
    print(f"\nOpenBao fixture timings (s): {openbao.timings}")
    assert openbao.timings["ready"] < 30


def test_limited_use_token_counts_down_on_use_only(bao):
    # test_core relies on this to see when the plugin starts using a new token file
    t = bao.create_plugin_token(num_uses=1000)
    look = lambda: bao.api_ok("POST", "auth/token/lookup", {"token": t}).body["data"]["num_uses"]
    assert look() == 1000
    assert look() == 1000  # looking it up with the root token does not use it
    bao.api_ok("POST", "transit/encrypt/kubernetes", {"plaintext": b64(b"x")}, token=t)
    assert look() == 999
    bao.revoke_token(t)
