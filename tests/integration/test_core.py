"""Core behaviour of the real trousseau binary against the real OpenBao (mutual TLS).

Each test starts its own plugin (status.refresh_period 1s, log.level debug, seccomp enforce unless
TROUSSEAU_SECCOMP says otherwise); the fixture teardown asserts exit 0 on SIGTERM and that the
socket file is gone. Tests that stop, seal or mis-token OpenBao get it restored by the `bao`
fixture.
"""
from __future__ import annotations

import base64
import concurrent.futures
import os
import socket
import stat
import threading
import time

import grpc
import pytest

from itlib.plugin import DELETE, plugin_binary, sanitizer_of

pytestmark = pytest.mark.plugin

# Latency bounds are for the shipped build; a sanitizer build (TSan: 5-15x slower) gets 5x.
SLACK = 5.0 if sanitizer_of(plugin_binary()) else 1.0

OK = "ok"
MAX_CIPHERTEXT = 1024
MAX_KEY_ID = 1024
MAX_ANNOTATIONS = 32 * 1024
MAX_PLAINTEXT = 64 * 1024


# ------------------------------------------------------------------ helpers
def wait_ok(plugin, timeout: float = 10.0):
    return plugin.wait_healthz(lambda s: s.healthz == OK, timeout, 'healthz "ok"')


def wait_not_ok(plugin, timeout: float = 8.0):
    return plugin.wait_healthz(lambda s: s.healthz != OK, timeout, 'healthz other than "ok"')


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kwargs)
    return ei.value


def vault_decrypt(bao, ciphertext: bytes) -> bytes:
    """Decrypts directly with OpenBao (the plugin's token): proves real Transit wrapping."""
    r = bao.api_ok("POST", f"{bao.mount}/decrypt/{bao.key}",
                   {"ciphertext": ciphertext.decode()}, token=bao.plugin_token)
    return base64.b64decode(r.body["data"]["plaintext"])


def assert_clean_details(err: grpc.RpcError, bao, *secrets: bytes) -> str:
    details = err.details() or ""
    assert details.strip(), f"{err.code()} with empty details"
    for token in (bao.plugin_token, bao.root_token):
        assert token not in details, "error details contain a Vault token"
    for s in secrets:
        if not s:
            continue
        for form in (base64.b64encode(s).decode(), s.hex()):
            assert form[:24] not in details, "error details contain the plaintext"
    return details


def assert_annotations_ok(annotations) -> None:
    total = 0
    for k, v in annotations.items():
        assert "." in k, f"annotation key {k!r} is not a fully qualified domain name"
        total += len(k.encode()) + len(v)
    assert total <= MAX_ANNOTATIONS


def wait_rpc(fn, predicate, timeout: float, what: str):
    """Calls fn() until predicate(result_or_error) is true; bounded in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except grpc.RpcError as e:
            last = e
        if predicate(last):
            return last
        time.sleep(0.2)
    desc = last if not isinstance(last, grpc.RpcError) else f"{last.code()}: {last.details()}"
    raise AssertionError(f"{what} not reached within {timeout}s; last: {desc}")


def is_code(code):
    return lambda r: isinstance(r, grpc.RpcError) and r.code() == code


def is_success(r) -> bool:
    return not isinstance(r, grpc.RpcError)


def vault_addr_in(details: str, bao, port: int | None = None) -> bool:
    return f"127.0.0.1:{port or bao.port}" in details


# ------------------------------------------------------------------ v2 basics
def test_v2_status_reports_v2_ok_and_a_bounded_key_id(plugin):
    st = wait_ok(plugin)
    assert st.version == "v2"
    assert st.key_id
    assert len(st.key_id.encode()) <= MAX_KEY_ID


def test_v2_round_trip_of_a_32_byte_seed_through_transit(plugin, bao):
    st = wait_ok(plugin)
    seed = os.urandom(32)
    enc = plugin.encrypt(seed)
    version = bao.latest_version()
    assert enc.ciphertext.startswith(f"vault:v{version}:".encode())
    assert 0 < len(enc.ciphertext) <= MAX_CIPHERTEXT
    assert enc.key_id == st.key_id
    assert_annotations_ok(enc.annotations)
    assert plugin.decrypt(enc.ciphertext).plaintext == seed
    # really wrapped by OpenBao's transit key, not by something local
    assert vault_decrypt(bao, enc.ciphertext) == seed


def test_v2_decrypt_with_key_id_and_annotations_passed_back(plugin):
    wait_ok(plugin)
    seed = os.urandom(32)
    enc = plugin.encrypt(seed, uid="uid-encrypt")
    dec = plugin.decrypt(enc.ciphertext, key_id=enc.key_id, annotations=dict(enc.annotations),
                         uid="uid-decrypt")
    assert dec.plaintext == seed


def test_v2_encrypt_is_not_deterministic(plugin):
    wait_ok(plugin)
    seed = os.urandom(32)
    assert plugin.encrypt(seed).ciphertext != plugin.encrypt(seed).ciphertext


# ------------------------------------------------------------------ input limits
def test_v1beta1_64_kib_plaintext_round_trips(plugin, bao):
    # v1beta1 has no ciphertext cap, so the plaintext limit (64 KiB) is the only one.
    wait_ok(plugin)
    data = os.urandom(MAX_PLAINTEXT)
    enc = plugin.v1_encrypt(data, timeout=10)
    assert enc.cipher.startswith(b"vault:v")
    assert vault_decrypt(bao, enc.cipher) == data
    assert plugin.v1_decrypt(enc.cipher, timeout=10).plain == data


def test_v2_plaintext_that_cannot_wrap_under_1024_bytes_is_refused_before_vault(plugin, bao):
    # KMS v2 caps ciphertext at 1024 bytes: a wrapped 64 KiB plaintext would be ~87 KiB, so
    # the plugin refuses it up front (INVALID_ARGUMENT naming the limit), with OpenBao stopped
    # to prove no network call is made. 700 bytes still fits.
    wait_ok(plugin)
    small = os.urandom(700)
    enc = plugin.encrypt(small)
    assert len(enc.ciphertext) <= MAX_CIPHERTEXT
    assert plugin.decrypt(enc.ciphertext).plaintext == small
    bao.stop()
    for size in (800, MAX_PLAINTEXT):
        err = rpc_error(plugin.encrypt, os.urandom(size))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert "1024" in err.details()
        assert_clean_details(err, bao)


def test_v2_empty_plaintext_is_invalid_argument(plugin, bao):
    err = rpc_error(plugin.encrypt, b"")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_clean_details(err, bao)


def test_v2_plaintext_over_64_kib_is_invalid_argument(plugin, bao):
    data = os.urandom(MAX_PLAINTEXT + 1)
    err = rpc_error(plugin.encrypt, data)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_clean_details(err, bao, data)


MALFORMED = [
    pytest.param(b"garbage", id="no-prefix"),
    pytest.param(b"vault:vX:abc", id="bad-version"),
    pytest.param(b"vault:v1:" + b"A" * (MAX_CIPHERTEXT + 1 - len(b"vault:v1:")) + b"A",
                 id="over-1024-bytes"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("ciphertext", MALFORMED)
def test_v2_malformed_ciphertext_is_invalid_argument(plugin, bao, ciphertext):
    err = rpc_error(plugin.decrypt, ciphertext)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_clean_details(err, bao)


def test_malformed_input_is_rejected_without_openbao(plugin, bao):
    wait_ok(plugin)
    assert bao.stop() == 0
    for ct in (b"garbage", b"vault:vX:abc", b"vault:v1:" + b"A" * MAX_CIPHERTEXT):
        t0 = time.monotonic()
        err = rpc_error(plugin.decrypt, ct, timeout=3)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (ct[:16], err.details())
        assert time.monotonic() - t0 < 1.0
    for pt in (b"", os.urandom(MAX_PLAINTEXT + 1)):
        err = rpc_error(plugin.encrypt, pt, timeout=3)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


def test_v2_tampered_ciphertext_is_invalid_argument(plugin, bao):
    wait_ok(plugin)
    seed = os.urandom(32)
    ct = plugin.encrypt(seed).ciphertext
    prefix, body = ct.rsplit(b":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 0x01  # flip a bit of the GCM tag
    tampered = prefix + b":" + base64.b64encode(bytes(raw))
    err = rpc_error(plugin.decrypt, tampered)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_clean_details(err, bao, seed)


# ------------------------------------------------------------------ v1beta1
def test_v1beta1_version(plugin, kms):
    resp = plugin.v1.Version(kms.v1.pb2.VersionRequest(version="v1beta1"), timeout=3)
    assert resp.version == "v1beta1"
    assert resp.runtime_name
    assert resp.runtime_version


def test_v1beta1_round_trip(plugin, bao):
    wait_ok(plugin)
    seed = os.urandom(32)
    cipher = plugin.v1_encrypt(seed).cipher
    assert cipher.startswith(b"vault:v")
    assert plugin.v1_decrypt(cipher).plain == seed
    assert vault_decrypt(bao, cipher) == seed


def test_v1beta1_and_v2_ciphertexts_are_interchangeable(plugin):
    wait_ok(plugin)
    a, b = os.urandom(32), os.urandom(32)
    v1_ct = plugin.v1_encrypt(a).cipher
    assert plugin.decrypt(v1_ct).plaintext == a
    v2_ct = plugin.encrypt(b).ciphertext
    assert plugin.v1_decrypt(v2_ct).plain == b


# ------------------------------------------------------------------ rotation
def test_rotation_changes_key_id_and_old_ciphertext_still_decrypts(plugin, bao):
    st0 = wait_ok(plugin)
    old_seed = os.urandom(32)
    old = plugin.encrypt(old_seed)
    assert old.key_id == st0.key_id
    new_version = bao.rotate_key()
    st1 = plugin.wait_healthz(lambda s: s.healthz == OK and s.key_id != st0.key_id, 10.0,
                              "a new key_id after rotation")
    assert st1.key_id and len(st1.key_id.encode()) <= MAX_KEY_ID
    new_seed = os.urandom(32)
    new = plugin.encrypt(new_seed)
    assert new.key_id == st1.key_id
    assert new.ciphertext.startswith(f"vault:v{new_version}:".encode())
    assert plugin.decrypt(old.ciphertext, key_id=old.key_id,
                          annotations=dict(old.annotations)).plaintext == old_seed
    assert plugin.decrypt(new.ciphertext, key_id=new.key_id,
                          annotations=dict(new.annotations)).plaintext == new_seed


def test_key_id_is_stable_without_rotation(plugin):
    st0 = wait_ok(plugin)
    time.sleep(2.5)  # a few refresh periods
    st1 = wait_ok(plugin)
    assert st1.key_id == st0.key_id


# ------------------------------------------------------------------ concurrency
@pytest.mark.slow
def test_concurrent_round_trips(plugin):
    wait_ok(plugin)
    threads, rounds = 32, 50
    failures: list[str] = []
    lock = threading.Lock()
    stub_v2 = plugin.v2
    pb2 = plugin.v2mod.pb2

    deadline = time.monotonic() + 180.0

    def worker(n: int) -> int:
        done = 0
        for i in range(rounds):
            if time.monotonic() > deadline:
                with lock:
                    failures.append(f"thread {n}: overall 180 s deadline hit at round {i}")
                break
            seed = os.urandom(32)
            try:
                enc = stub_v2.Encrypt(pb2.EncryptRequest(plaintext=seed, uid=f"t{n}-{i}"),
                                      timeout=10)
                dec = stub_v2.Decrypt(pb2.DecryptRequest(ciphertext=enc.ciphertext,
                                                         key_id=enc.key_id, uid=f"t{n}-{i}",
                                                         annotations=dict(enc.annotations)),
                                      timeout=10)
                if dec.plaintext != seed:
                    raise AssertionError("plaintext mismatch")
                done += 1
            except Exception as e:  # noqa: BLE001 - collected and reported
                with lock:
                    msg = f"{e.code()}: {e.details()}" if isinstance(e, grpc.RpcError) else repr(e)
                    failures.append(f"thread {n} round {i}: {msg}")
        return done

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as ex:
        total = sum(ex.map(worker, range(threads)))
    elapsed = time.monotonic() - t0
    print(f"\n{threads}x{rounds} round trips in {elapsed:.1f}s")
    assert not failures, f"{len(failures)} failures, first: {failures[:5]}"
    assert total == threads * rounds


# ------------------------------------------------------------------ TLS
def test_wrong_ca_gives_unavailable_and_unhealthy(plugin_factory, bao, pki):
    pl = plugin_factory.start({"vault": {"tls": {"ca_file": pki.other_ca_file}}})
    st = wait_not_ok(pl)
    assert st.version == "v2"
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    details = assert_clean_details(err, bao).lower()
    assert "tls" in details or "certificate" in details, details
    assert vault_addr_in(details, bao), details


def test_wrong_spki_pin_gives_unavailable(plugin_factory, bao, pki):
    pl = plugin_factory.start({"vault": {"tls": {"spki_pins": [pki.other_spki_pin]}}})
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    details = assert_clean_details(err, bao).lower()
    assert "pin" in details, details
    wait_not_ok(pl)


def test_right_spki_pin_works(plugin_factory, pki):
    pl = plugin_factory.start({"vault": {"tls": {"spki_pins": [pki.other_spki_pin,
                                                               pki.server_spki_pin]}}})
    wait_ok(pl)
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed


def test_missing_client_certificate_gives_unavailable_but_status_serves(plugin_factory, bao):
    pl = plugin_factory.start({"vault": {"tls": {"client_cert_file": DELETE,
                                                 "client_key_file": DELETE}}})
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert_clean_details(err, bao)
    st = wait_not_ok(pl)
    assert st.version == "v2"


def test_http_address_is_refused_at_start(plugin_factory, bao):
    pl = plugin_factory.run_expecting_failure({"vault": {"addresses": [bao.http_addr]}})
    assert pl.returncode != 0
    lines = [ln for ln in pl.stderr_text().splitlines() if ln.strip()]
    assert len(lines) == 1, pl.output_text()
    assert lines[0].startswith(("config: ", "trousseau: ")), lines[0]
    assert "vault.addresses" in lines[0]
    assert not os.path.lexists(pl.socket_path)


def test_https_to_a_plain_http_listener_gives_unavailable(plugin_factory, bao):
    pl = plugin_factory.start({"vault": {"addresses": [bao.https_to_http_listener]}})
    err = rpc_error(pl.encrypt, os.urandom(32))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
    assert_clean_details(err, bao)
    wait_not_ok(pl)


# ------------------------------------------------------------------ OpenBao outages
def test_openbao_down_then_back_without_plugin_restart(plugin, bao):
    wait_ok(plugin)
    seed = os.urandom(32)
    assert plugin.decrypt(plugin.encrypt(seed).ciphertext).plaintext == seed

    assert bao.stop() == 0
    deadline = 3.0
    t0 = time.monotonic()
    err = rpc_error(plugin.encrypt, seed, timeout=deadline)
    elapsed = time.monotonic() - t0
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), \
        f"{err.code()}: {err.details()}"
    assert elapsed < deadline + 0.5 * SLACK
    if err.code() == grpc.StatusCode.UNAVAILABLE:
        details = assert_clean_details(err, bao, seed)
        assert vault_addr_in(details, bao), details

    st = wait_not_ok(plugin, timeout=8.0)
    assert st.version == "v2"
    for _ in range(10):
        t0 = time.monotonic()
        plugin.status(timeout=1.0)
        assert time.monotonic() - t0 < 0.1 * SLACK, "Status blocked while OpenBao is down"

    bao.start()
    wait_ok(plugin, timeout=20.0)
    seed2 = os.urandom(32)
    enc = wait_rpc(lambda: plugin.encrypt(seed2), is_success, 10.0, "Encrypt after recovery")
    assert plugin.decrypt(enc.ciphertext).plaintext == seed2
    assert plugin.proc.poll() is None


def test_sealed_openbao_gives_unavailable_then_recovers(plugin, bao):
    wait_ok(plugin)
    bao.seal()
    err = rpc_error(plugin.encrypt, os.urandom(32), timeout=5)
    assert err.code() == grpc.StatusCode.UNAVAILABLE, f"{err.code()}: {err.details()}"
    assert_clean_details(err, bao)
    wait_not_ok(plugin)
    bao.unseal()
    wait_ok(plugin, timeout=15.0)
    seed = os.urandom(32)
    enc = wait_rpc(lambda: plugin.encrypt(seed), is_success, 10.0, "Encrypt after unseal")
    assert plugin.decrypt(enc.ciphertext).plaintext == seed


# ------------------------------------------------------------------ token
def test_invalid_token_gives_permission_denied_and_token_file_is_reread(plugin, bao):
    wait_ok(plugin)
    bad = "s.trousseau-it-invalid-token"
    bao.write_token_file(bad)
    err = wait_rpc(lambda: plugin.encrypt(os.urandom(32)),
                   is_code(grpc.StatusCode.PERMISSION_DENIED), 15.0,
                   "PERMISSION_DENIED with an invalid token")
    details = assert_clean_details(err, bao)
    assert bad not in details
    assert "permission denied" in details.lower(), details

    bao.restore_token_file()
    seed = os.urandom(32)
    enc = wait_rpc(lambda: plugin.encrypt(seed), is_success, 15.0,
                   "Encrypt after restoring the token file")
    assert plugin.decrypt(enc.ciphertext).plaintext == seed
    wait_ok(plugin)


def test_revoked_token_gives_permission_denied(plugin, bao):
    wait_ok(plugin)
    # a limited-use token, so OpenBao tells us when the plugin starts using it
    uses = 100000
    temp = bao.create_plugin_token(num_uses=uses)
    bao.write_token_file(temp)

    def temp_token_used(_):
        r = bao.api_ok("POST", "auth/token/lookup", {"token": temp})
        return r.body["data"]["num_uses"] < uses  # a lookup by the root token does not count

    wait_rpc(lambda: plugin.encrypt(os.urandom(32)), temp_token_used, 15.0,
             "the plugin using the new token from the token file")
    bao.revoke_token(temp)
    err = wait_rpc(lambda: plugin.encrypt(os.urandom(32)),
                   is_code(grpc.StatusCode.PERMISSION_DENIED), 15.0,
                   "PERMISSION_DENIED with a revoked token")
    assert temp not in assert_clean_details(err, bao)
    bao.restore_token_file()
    wait_rpc(lambda: plugin.encrypt(os.urandom(32)), is_success, 15.0,
             "Encrypt after restoring the token file")


# ------------------------------------------------------------------ socket and lifecycle
def test_socket_is_a_0600_unix_socket(plugin):
    st = os.lstat(plugin.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_sigterm_exits_zero_and_removes_socket(plugin):
    wait_ok(plugin)
    assert plugin.terminate(10.0) == 0
    assert not os.path.lexists(plugin.socket_path)


def test_stale_socket_file_is_replaced(plugin_factory, it_dir):
    path = os.path.join(it_dir, "run", "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # bound but closed: the file stays, nobody listens
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    pl = plugin_factory.start(socket_path=path)
    wait_ok(pl)
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed


def test_regular_file_at_socket_path_is_refused(plugin_factory, it_dir):
    path = os.path.join(it_dir, "run", "not-a-socket.sock")
    with open(path, "w") as f:
        f.write("precious\n")
    try:
        pl = plugin_factory.run_expecting_failure(socket_path=path)
        assert pl.returncode != 0
        assert path in pl.output_text(), pl.output_text()
        with open(path) as f:
            assert f.read() == "precious\n", "the plugin overwrote a regular file"
    finally:
        os.unlink(path)


def test_output_never_contains_token_or_plaintext(plugin_factory, bao):
    pl = plugin_factory.start()
    wait_ok(pl)
    seed = os.urandom(32)
    enc = pl.encrypt(seed, uid="uid-log-check")
    assert pl.decrypt(enc.ciphertext).plaintext == seed
    rpc_error(pl.decrypt, b"vault:v1:" + base64.b64encode(os.urandom(60)))
    assert pl.terminate(10.0) == 0
    out = pl.stderr_text() + pl.stdout_text()
    assert out.strip(), "no log output at log.level debug"
    assert bao.plugin_token not in out
    assert bao.root_token not in out
    for form in (base64.b64encode(seed).decode(), seed.hex()):
        assert form not in out
