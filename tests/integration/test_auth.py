"""Auth methods and token lifecycle against the real OpenBao (issue 4, C++ auth part).

For each login method (AppRole, TLS certificate, JWT, Kubernetes with a stub TokenReview
endpoint) the plugin starts, logs in at a custom mount and round-trips Encrypt/Decrypt; bad
credentials are reported with a clear message naming the method and mount. The slow tests are the
issue's proofs 1 and 2:

1. an AppRole token with a 4 s TTL (max 60 s) renewed continuously under a load of 32 concurrent
   requests, the load kept running until the plugin has logged in again because of the max TTL
   (reason "max_ttl", before the first token's max TTL ends by OpenBao's own issue times): zero
   failed requests (minimum load length: TROUSSEAU_AUTH_LOAD_SECONDS, default 60);
2. the plugin's token revoked mid-load (AppRole, then cert): the plugin logs in again and the
   load goes on, failures bounded to the requests in flight at that moment.

Measured numbers (requests, failures, renewals, logins, longest wait for a login, read from the
plugin's own log lines) are printed; run with `-s` to see them.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime

import grpc
import pytest

from itlib.auth_setup import (JwtSigner, TokenReviewStub, log_events, revoke_tokens_of_mount,
                              setup_approle, setup_cert, setup_jwt, setup_kubernetes,
                              tokens_of_mount, write_credential)
from itlib.plugin import DELETE

pytestmark = pytest.mark.plugin

OK = "ok"
CONCURRENCY = 32
LOAD_SECONDS = float(os.environ.get("TROUSSEAU_AUTH_LOAD_SECONDS", "60"))
MAX_TTL_S = 60


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def signer():
    return JwtSigner()


def auth_overrides(auth: dict) -> dict:
    return {"vault": {"auth": {"token_file": DELETE, **auth}}}


def wait_ok(plugin, timeout: float = 15.0):
    return plugin.wait_healthz(lambda s: s.healthz == OK, timeout, 'healthz "ok"')


def round_trip(plugin) -> None:
    seed = os.urandom(32)
    enc = plugin.encrypt(seed)
    assert enc.ciphertext.startswith(b"vault:v"), enc.ciphertext[:16]
    dec = plugin.decrypt(enc.ciphertext, key_id=enc.key_id, annotations=dict(enc.annotations))
    assert dec.plaintext == seed


def assert_logged_in(plugin, method: str, mount: str) -> dict:
    logins = [e for e in log_events(plugin, "auth.login") if e.get("msg") == "logged in to Vault"]
    assert logins, f"no successful auth.login line:\n{plugin.output_text()}"
    first = logins[0]
    assert first["method"] == method and first["mount"] == mount, first
    assert first["duration_ms"] >= 0 and "ttl_s" in first and "longest_wait_ms" in first
    start = [e for e in log_events(plugin, "start")]
    assert start and f"{method} login at auth/{mount}" in start[0].get("auth", ""), start
    return first


def healthz_failure(plugin, needle: str, timeout: float = 15.0):
    return plugin.wait_healthz(lambda s: s.healthz != OK and needle in s.healthz, timeout,
                               f"healthz naming {needle!r}")


def assert_no_secret_in_output(plugin, *secrets: str) -> None:
    out = plugin.output_text(limit=10_000_000)
    for s in secrets:
        if s:
            assert s not in out, "a credential appears in the plugin's output"


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class Load:
    """`CONCURRENCY` threads doing Encrypt+Decrypt round trips until stopped; every RPC counted."""

    def __init__(self, plugin, concurrency: int = CONCURRENCY, timeout: float = 5.0):
        self.plugin = plugin
        self.concurrency = concurrency
        self.timeout = timeout
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests = 0
        self.failures: list[tuple[float, str]] = []
        self.t0 = 0.0
        self.threads: list[threading.Thread] = []

    def _worker(self, n: int) -> None:
        stub, pb2 = self.plugin.v2, self.plugin.v2mod.pb2
        i = 0
        while not self.stop.is_set():
            i += 1
            seed = os.urandom(32)
            for step in ("encrypt", "decrypt"):
                try:
                    if step == "encrypt":
                        enc = stub.Encrypt(pb2.EncryptRequest(plaintext=seed, uid=f"l{n}-{i}"),
                                           timeout=self.timeout)
                    else:
                        dec = stub.Decrypt(pb2.DecryptRequest(
                            ciphertext=enc.ciphertext, key_id=enc.key_id, uid=f"l{n}-{i}",
                            annotations=dict(enc.annotations)), timeout=self.timeout)
                        if dec.plaintext != seed:
                            raise AssertionError("plaintext mismatch")
                    with self.lock:
                        self.requests += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    msg = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else repr(e)
                    with self.lock:
                        self.requests += 1
                        self.failures.append((time.monotonic() - self.t0, f"{step}: {msg}"))
                    break

    def start(self) -> "Load":
        self.t0 = time.monotonic()
        for n in range(self.concurrency):
            t = threading.Thread(target=self._worker, args=(n,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def finish(self) -> float:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return time.monotonic() - self.t0


def lifecycle_numbers(plugin) -> dict:
    """Counts come from the plugin's /metrics (what it did); the reasons, durations and
    invalidations only exist in its log records, so those are read there."""
    logins = [e for e in log_events(plugin, "auth.login") if e.get("msg") == "logged in to Vault"]
    renews = [e for e in log_events(plugin, "auth.renew") if e.get("level") == "info"]
    waits = [e.get("wait_ms", 0) for e in log_events(plugin, "auth.wait")]
    m = plugin.metrics()

    def count(name: str, outcome: str) -> int:
        return int(m.get(f'{name}{{outcome="{outcome}"}}', 0))

    return {
        "logins": count("trousseau_vault_logins_total", "success"),
        "login_failures": count("trousseau_vault_logins_total", "failure"),
        "login_reasons": [e.get("reason") for e in logins],
        "login_ms_max": max((e.get("duration_ms", 0) for e in logins), default=0),
        "renewals": count("trousseau_vault_token_renewals_total", "success"),
        "renewal_ms_max": max((e.get("duration_ms", 0) for e in renews), default=0),
        "renewal_failures": count("trousseau_vault_token_renewals_total", "failure"),
        "invalidations": len(log_events(plugin, "auth.invalidate")),
        "longest_wait_ms": max(waits, default=0),
    }


# ------------------------------------------------------------------ each method logs in
def test_approle_login_at_custom_mount_round_trips(plugin_factory, bao, it_dir):
    auth = setup_approle(bao, it_dir, "it-approle")
    pl = plugin_factory.start(auth_overrides(auth))
    wait_ok(pl)
    round_trip(pl)
    assert_logged_in(pl, "approle", "it-approle")
    assert_no_secret_in_output(pl, read(auth["secret_id_file"]), read(auth["role_id_file"]))


def test_cert_login_round_trips(plugin_factory, bao):
    auth = setup_cert(bao, "it-cert")
    pl = plugin_factory.start(auth_overrides(auth))
    wait_ok(pl)
    round_trip(pl)
    assert_logged_in(pl, "cert", "it-cert")


def test_jwt_login_round_trips_and_rereads_the_jwt(plugin_factory, bao, it_dir, signer):
    auth = setup_jwt(bao, it_dir, "it-jwt", signer)
    pl = plugin_factory.start(auth_overrides(auth))
    wait_ok(pl)
    round_trip(pl)
    assert_logged_in(pl, "jwt", "it-jwt")
    jwt = read(auth["jwt_file"])
    assert_no_secret_in_output(pl, jwt, *jwt.split("."))


def test_kubernetes_login_round_trips_with_a_token_review_stub(plugin_factory, bao, it_dir, signer):
    stub = TokenReviewStub(bao.pki)
    try:
        auth = setup_kubernetes(bao, it_dir, "it-kubernetes", stub, signer)
        pl = plugin_factory.start(auth_overrides(auth))
        wait_ok(pl)
        round_trip(pl)
        assert_logged_in(pl, "kubernetes", "it-kubernetes")
        assert stub.reviews >= 1, "OpenBao never asked the TokenReview stub"
    finally:
        stub.close()


# ------------------------------------------------------------------ bad credentials
def test_approle_wrong_secret_id_is_reported_then_recovers_without_restart(plugin_factory, bao,
                                                                            it_dir):
    auth = setup_approle(bao, it_dir, "it-approle-bad")
    good = read(auth["secret_id_file"])
    wrong = str(uuid.uuid4())
    write_credential(auth["secret_id_file"], wrong)
    pl = plugin_factory.start(auth_overrides(auth))
    st = healthz_failure(pl, "vault auth approle (mount it-approle-bad)")
    assert "login refused" in st.healthz, st.healthz
    with pytest.raises(grpc.RpcError) as ei:
        pl.encrypt(os.urandom(32))
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "vault auth approle (mount it-approle-bad)" in ei.value.details()
    # The operator fixes the file: the plugin recovers by itself (backoff, no restart).
    write_credential(auth["secret_id_file"], good)
    wait_ok(pl, timeout=40)
    round_trip(pl)
    assert_no_secret_in_output(pl, good, wrong)
    failed = [e for e in log_events(pl, "auth.login") if e.get("msg") == "login failed"]
    assert failed and all("retry_in_ms" in e for e in failed)
    # No login storm: far fewer attempts than the health checks and requests made meanwhile.
    assert len(failed) <= 8, f"{len(failed)} failed logins"


def test_cert_unknown_role_is_reported(plugin_factory, bao):
    auth = setup_cert(bao, "it-cert-bad")
    auth["name"] = "no-such-role"
    pl = plugin_factory.start(auth_overrides(auth))
    st = healthz_failure(pl, "vault auth cert (mount it-cert-bad)")
    assert "login refused" in st.healthz, st.healthz


def test_jwt_signed_by_another_key_is_reported(plugin_factory, bao, it_dir, signer):
    auth = setup_jwt(bao, it_dir, "it-jwt-bad", signer)
    forged = JwtSigner().token()
    write_credential(auth["jwt_file"], forged)
    pl = plugin_factory.start(auth_overrides(auth))
    st = healthz_failure(pl, "vault auth jwt (mount it-jwt-bad)")
    assert "login refused" in st.healthz, st.healthz
    assert_no_secret_in_output(pl, forged, *forged.split("."))


def test_kubernetes_rejected_token_review_is_reported(plugin_factory, bao, it_dir, signer):
    stub = TokenReviewStub(bao.pki)
    stub.accept = False
    try:
        auth = setup_kubernetes(bao, it_dir, "it-kubernetes-bad", stub, signer)
        pl = plugin_factory.start(auth_overrides(auth))
        st = healthz_failure(pl, "vault auth kubernetes (mount it-kubernetes-bad)")
        assert "login refused" in st.healthz, st.healthz
    finally:
        stub.close()


def test_secret_id_readable_by_others_refuses_to_start(plugin_factory, bao, it_dir):
    auth = setup_approle(bao, it_dir, "it-approle-mode")
    os.chmod(auth["secret_id_file"], 0o644)
    pl = plugin_factory.run_expecting_failure(auth_overrides(auth))
    assert pl.returncode == 2, pl.output_text()
    err = pl.stderr_text()
    assert "secret_id file" in err and auth["secret_id_file"] in err, err
    assert "group or others" in err, err
    assert read(auth["secret_id_file"]) not in pl.output_text()


# ------------------------------------------------------------------ proof 1: renewal under load
def token_times(bao, mount: str) -> dict[str, tuple[float, str]]:
    """OpenBao's own view: accessor -> (issue time as epoch seconds, expire_time) of each live
    token issued by auth/<mount>/login."""
    out = {}
    for acc in tokens_of_mount(bao, mount):
        d = bao.api_ok("POST", "auth/token/lookup-accessor", {"accessor": acc}).body["data"]
        issued = datetime.fromisoformat(d["issue_time"].replace("Z", "+00:00")).timestamp()
        out[acc] = (issued, d.get("expire_time") or "")
    return out


@pytest.mark.slow
def test_proof1_short_ttl_token_renewed_under_load_with_zero_failures(plugin_factory, bao, it_dir):
    auth = setup_approle(bao, it_dir, "it-approle-short", ttl="4s", max_ttl=f"{MAX_TTL_S}s")
    pl = plugin_factory.start(auth_overrides(auth))
    wait_ok(pl)
    first = token_times(bao, "it-approle-short")
    assert len(first) == 1, first
    (first_acc, (first_issued, _)), = first.items()
    load = Load(pl).start()
    time.sleep(LOAD_SECONDS)
    # The load keeps running across the max-TTL re-login (bounded: it is due ~1.3 s before the
    # 60 s max TTL of the first token), then a little longer so requests use the new token.
    n = lifecycle_numbers(pl)
    give_up = time.monotonic() + MAX_TTL_S + 30
    while n["logins"] < 2 and time.monotonic() < give_up:
        time.sleep(0.5)
        n = lifecycle_numbers(pl)
    relogin_seen = n["logins"] >= 2
    if relogin_seen:
        time.sleep(3)
    elapsed = load.finish()
    n = lifecycle_numbers(pl)
    print(f"\nproof 1 (AppRole, token_ttl 4s, token_max_ttl {MAX_TTL_S}s): {load.requests} "
          f"requests in {elapsed:.1f}s at concurrency {CONCURRENCY}, {len(load.failures)} failed; "
          f"{n['renewals']} renewals (max {n['renewal_ms_max']} ms), {n['logins']} logins "
          f"{n['login_reasons']} (max {n['login_ms_max']} ms), longest wait for a login "
          f"{n['longest_wait_ms']} ms")
    assert relogin_seen, f"no second login within the max TTL + 30 s: {n}"
    assert not load.failures, f"{len(load.failures)} failures, first: {load.failures[:5]}"
    assert load.requests > 0
    # ~one renewal every 2.4-2.7 s.
    assert n["renewals"] >= int(min(LOAD_SECONDS, MAX_TTL_S - 4) / 2.7) - 2, n
    assert n["renewal_failures"] == 0, n
    # The second login is the proactive max-TTL one: not a reaction to an expired or refused token.
    assert n["login_reasons"][:2] == ["first login", "max_ttl"], n
    assert n["invalidations"] == 0, n
    # OpenBao's own record: the second token was issued before the first one's max TTL ended.
    later = {a: t for a, t in token_times(bao, "it-approle-short").items() if a != first_acc}
    assert later, "OpenBao holds no second token for the mount"
    # the plugin's login counter and OpenBao's tokens agree (a revoked or expired token is gone
    # from OpenBao, so the plugin may have logged in more often than OpenBao still shows)
    assert 1 + len(later) <= n["logins"], (n["logins"], later)
    assert len(n["login_reasons"]) == n["logins"], n
    second_issued = min(t for t, _ in later.values())
    print(f"proof 1: OpenBao issued the second token {second_issued - first_issued:.2f} s after "
          f"the first (max TTL {MAX_TTL_S} s)")
    # OpenBao's corroboration that the first token never lapsed. It cannot tell the proactive
    # path (planned ~1.3 s ahead, a third of the 4 s increment) from a re-login just at expiry
    # on the plugin's own clock: with the proactive path broken that way, the second token came
    # 60.26 s after the first once (caught) and under 60 s another time (not caught); a loaded
    # machine's login latency (1.1 s seen) eats the margin, so no tighter bound is reliable.
    # The reason assertion above is what tells the two apart.
    assert second_issued < first_issued + MAX_TTL_S, (second_issued - first_issued, later)


# ------------------------------------------------------------------ proof 2: revocation under load
@pytest.mark.slow
@pytest.mark.parametrize("method", ["approle", "cert"])
def test_proof2_revoked_token_mid_load_logs_in_again(plugin_factory, bao, it_dir, method):
    mount = f"it-{method}-revoke"
    auth = (setup_approle(bao, it_dir, mount) if method == "approle" else setup_cert(bao, mount))
    pl = plugin_factory.start(auth_overrides(auth))
    wait_ok(pl)
    load = Load(pl).start()
    time.sleep(5)
    revoked_at = time.monotonic() - load.t0
    revoked = revoke_tokens_of_mount(bao, mount)
    time.sleep(10)
    elapsed = load.finish()
    n = lifecycle_numbers(pl)
    print(f"\nproof 2 ({method}): revoked {revoked} token(s) at {revoked_at:.1f}s; "
          f"{load.requests} requests in {elapsed:.1f}s at concurrency {CONCURRENCY}, "
          f"{len(load.failures)} failed; logins {n['logins']} {n['login_reasons']} "
          f"(max {n['login_ms_max']} ms), longest wait for a login {n['longest_wait_ms']} ms")
    assert revoked >= 1
    assert n["logins"] >= 2, n
    assert "Vault refused the token (403)" in n["login_reasons"], n
    # Bounded to the requests in flight when the token died, and all right after it.
    assert len(load.failures) <= CONCURRENCY, load.failures[:5]
    assert all(revoked_at - 1 <= t <= revoked_at + 5 for t, _ in load.failures), load.failures[:5]
    round_trip(pl)
    wait_ok(pl)
