"""`trousseau doctor` against the real OpenBao (mutual TLS): a good policy, a policy without read
on the key, a policy with `create` on encrypt (Transit's upsert trap), a sealed node, a wrong CA,
`--output json`, kube-apiserver's EncryptionConfiguration (the shipped manifest adapted to
the test's socket, and a broken one), and a `vault.secondary`: a second, private OpenBao with its
own PKI (CA, server and client certificates) checked like the primary, and its failures (the
primary's CA, no read on its key, nothing listening) named "secondary vault <address> ...".

Each test writes a plugin config (not started) and runs `trousseau doctor` on it. Policies and
tokens are made per test; the seccomp profile is written from this binary so that check passes.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile

import pytest

from itlib.auth_setup import cred_dir, setup_approle, write_credential
from itlib.openbao import PLUGIN_GID, PLUGIN_UID, TRANSIT_KEY, TRANSIT_MOUNT, OpenBao
from itlib.pki import make_pki
from itlib.plugin import DELETE

pytestmark = pytest.mark.plugin

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ENC = f"{TRANSIT_MOUNT}/encrypt/{TRANSIT_KEY}"
DEC = f"{TRANSIT_MOUNT}/decrypt/{TRANSIT_KEY}"
KEYS = f"{TRANSIT_MOUNT}/keys/{TRANSIT_KEY}"
LINE = re.compile(r"^(✓|✗|!) (.+?): (.*)$")  # names hold no ": " (addresses hold ":")


def policy(enc=("update",), dec=("update",), keys=("read",)) -> str:
    def path(p, caps):
        return f'path "{p}" {{ capabilities = {json.dumps(list(caps))} }}\n' if caps else ""
    return (path(ENC, enc) + path(DEC, dec) + path(KEYS, keys) +
            path("auth/token/lookup-self", ["read"]) + path("auth/token/renew-self", ["update"]) +
            # doctor's own check of the token's capabilities (the default policy grants it)
            path("sys/capabilities-self", ["update"]))


_n = [0]


def token_file_for(bao, it_dir, hcl: str) -> str:
    """A fresh policy + periodic token holding only it, in a 0400 file owned by the plugin uid."""
    _n[0] += 1
    name = f"doctor-{os.getpid()}-{_n[0]}"
    bao.api_ok("PUT", f"sys/policies/acl/{name}", {"policy": hcl})
    token = bao.create_plugin_token(policies=[name])
    return write_credential(os.path.join(cred_dir(it_dir), f"{name}.token"), token)


class Doctor:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.lines = [m.groups() for m in map(LINE.match, self.out.splitlines()) if m]

    def marks(self, mark: str) -> list[tuple[str, str]]:
        return [(n, d) for m, n, d in self.lines if m == mark]

    def __repr__(self) -> str:
        return f"doctor exit {self.rc}\n{self.out}\nstderr:\n{self.err}"


@pytest.fixture
def doctor(plugin_factory, plugin_bin, bao, it_dir, tmp_path):
    profile = tmp_path / "trousseau.json"
    profile.write_bytes(subprocess.run([plugin_bin, "seccomp-profile"], check=True,
                                       capture_output=True).stdout)

    def run(overrides: dict | None = None, *extra: str, token_file: str | None = None) -> Doctor:
        ov = dict(overrides or {})
        tf = token_file or token_file_for(bao, it_dir, policy())
        ov.setdefault("vault", {}).setdefault("auth", {"method": "token", "token_file": tf})
        pl = plugin_factory.make(ov)
        proc = subprocess.run([plugin_bin, "doctor", "--config", pl.config_file,
                               "--seccomp-profile", str(profile), *extra],
                              capture_output=True, text=True, timeout=90)
        d = Doctor(proc)
        d.socket_path = pl.socket_path
        d.config_file = pl.config_file
        d.token_file = tf
        return d
    return run


def test_good_policy_all_checks_pass(doctor, bao):
    d = doctor()
    assert d.rc == 0, d
    assert not d.marks("✗") and not d.marks("!"), d
    names = [n for _, n, _ in d.lines]
    for want in ("config", "file vault.tls.ca_file", "file vault.auth.token_file",
                 f"vault {bao.addr} tcp", f"vault {bao.addr} tls", f"vault {bao.addr} health",
                 f"vault {bao.addr} clock", "vault login", "vault token",
                 f"transit key {TRANSIT_MOUNT}/{TRANSIT_KEY} type", f"capabilities {ENC}",
                 f"capabilities {DEC}", f"capabilities {KEYS}", "socket directory",
                 "seccomp profile"):
        assert want in names, d
    assert "handshake with the client certificate accepted" in dict(d.marks("✓"))[f"vault {bao.addr} tls"]
    assert d.out.splitlines()[-1].endswith("(exit 0)"), d
    # never a secret: not the token, not the client key
    with open(d.token_file) as f:
        token = f.read().strip()
    assert len(token) > 10 and token not in d.out and token not in d.err


def test_json_output_matches_text(doctor, bao, it_dir):
    tf = token_file_for(bao, it_dir, policy())
    text = doctor(None, token_file=tf)
    js = doctor(None, "--output", "json", token_file=tf)
    assert js.rc == text.rc == 0, js
    checks = json.loads(js.out)
    assert isinstance(checks, list) and checks
    for c in checks:
        assert set(c) == {"name", "result", "detail", "fix"}
        assert c["result"] in ("ok", "warn", "fail")
    assert [c["name"] for c in checks] == [n for _, n, _ in text.lines]
    assert all(c["result"] == "ok" for c in checks)


def test_approle_login_with_the_shipped_policy(doctor, bao, it_dir):
    """A login method, and the integration harness's policy (no sys/capabilities-self, no default
    policy, like a policy written before the shipped one granted it):
    everything passes except that the capabilities cannot be listed (a warning, exit 2)."""
    auth = setup_approle(bao, it_dir, "doctor-approle")
    d = doctor({"vault": {"auth": {"token_file": DELETE, **auth}}})
    assert d.rc == 2, d
    assert not d.marks("✗"), d
    assert [n for n, _ in d.marks("!")] == ["capabilities"], d
    assert "approle login at auth/doctor-approle" in dict(d.marks("✓"))["vault login"]
    assert "file vault.auth.secret_id_file" in dict(d.marks("✓"))
    for f in (auth["secret_id_file"], auth["role_id_file"]):
        with open(f) as fh:
            secret = fh.read().strip()
        assert secret not in d.out and secret not in d.err


def test_policy_without_read_on_key_fails_naming_the_path(doctor, bao, it_dir):
    d = doctor(token_file=token_file_for(bao, it_dir, policy(keys=())))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert f"capabilities {KEYS}" in failed, d
    assert "missing 'read'" in failed[f"capabilities {KEYS}"]
    assert f'path "{KEYS}" {{ capabilities = ["read"] }}' in d.out  # the fix line
    assert f"transit key {TRANSIT_MOUNT}/{TRANSIT_KEY}" in failed     # GET keys refused too
    assert "permission denied reading " + KEYS in failed[f"transit key {TRANSIT_MOUNT}/{TRANSIT_KEY}"]
    # encrypt/decrypt are still fine
    assert f"capabilities {ENC}" in dict(d.marks("✓"))


def test_create_on_encrypt_warns_about_the_upsert_trap(doctor, bao, it_dir):
    d = doctor(token_file=token_file_for(bao, it_dir, policy(enc=("create", "update"))))
    assert d.rc == 2, d
    assert not d.marks("✗"), d
    warned = dict(d.marks("!"))
    assert list(warned) == [f"capabilities {ENC}"], d
    assert "UPSERT TRAP" in warned[f"capabilities {ENC}"]
    assert "silently creates a new key" in warned[f"capabilities {ENC}"]


def test_broader_policy_warns(doctor, bao, it_dir):
    d = doctor(token_file=token_file_for(bao, it_dir, policy(keys=("read", "update", "delete"))))
    assert d.rc == 2, d
    assert "broader than needed" in dict(d.marks("!"))[f"capabilities {KEYS}"]


def test_sealed_node_fails(doctor, bao, it_dir):
    tf = token_file_for(bao, it_dir, policy())
    bao.seal()
    try:
        d = doctor(token_file=tf)
    finally:
        bao.unseal()  # the `bao` fixture also restores it
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert "sealed" in failed[f"vault {bao.addr} health"], d
    assert "unseal" in d.out
    assert "vault api" in failed  # nothing else against a sealed node
    assert f"vault {bao.addr} tls" in dict(d.marks("✓"))


def test_wrong_ca_fails_tls_with_a_hint(doctor, bao):
    d = doctor({"vault": {"tls": {"ca_file": bao.pki.other_ca_file}}})
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert "certificate verification failed" in failed[f"vault {bao.addr} tls"], d
    assert f"fix: vault.tls.ca_file ({bao.pki.other_ca_file}) must hold the CA" in d.out
    assert f"vault {bao.addr} tcp" in dict(d.marks("✓"))


def test_unreachable_vault_fails_with_the_connect_error(doctor, bao):
    # port 1: nothing listens there on the test machine
    d = doctor({"vault": {"addresses": ["https://127.0.0.1:1"]}})
    assert d.rc == 1, d
    assert "Connection refused" in dict(d.marks("✗"))["vault https://127.0.0.1:1 tcp"], d


def test_unsafe_token_file_mode_fails(doctor, bao, it_dir):
    tf = token_file_for(bao, it_dir, policy())
    os.chmod(tf, 0o644)
    d = doctor(token_file=tf)
    assert d.rc == 1, d
    assert "readable by group or others" in dict(d.marks("✗"))["file vault.auth.token_file"]
    assert f"fix: chmod 0400 {tf}" in d.out


def enc_config(tmp_path, socket_path: str, edit=None) -> str:
    with open(os.path.join(REPO, "manifests", "encryption-config.yaml")) as f:
        text = f.read()
    assert "unix:///var/run/kmsplugin/trousseau.sock" in text
    text = text.replace("unix:///var/run/kmsplugin/trousseau.sock", "unix://" + socket_path)
    if edit:
        text = edit(text)
    p = tmp_path / f"enc-{abs(hash(text))}.yaml"
    p.write_text(text)
    return str(p)


def test_encryption_config_shipped_manifest_passes(doctor, plugin_factory, tmp_path):
    sock = os.path.join(plugin_factory.it_dir, "run", "doctor-enc.sock")
    d = doctor({"socket": {"path": sock}}, "--encryption-config", enc_config(tmp_path, sock))
    assert d.rc == 0, d
    ok = dict(d.marks("✓"))
    assert ok["encryption-config [secrets] kms apiVersion"] == "v2"
    assert "identity" in ok["encryption-config [secrets] kms fallback"]
    assert "unix://" + sock in ok["encryption-config [secrets] kms endpoint"]


def test_encryption_config_broken_fails(doctor, plugin_factory, tmp_path):
    sock = os.path.join(plugin_factory.it_dir, "run", "doctor-enc.sock")

    def v1_with_cachesize(text):
        return text.replace("apiVersion: v2", "apiVersion: v1\n          cachesize: 1000") \
                   .replace("      - identity: {}\n", "")
    d = doctor({"socket": {"path": sock}}, "--encryption-config",
               enc_config(tmp_path, sock, v1_with_cachesize))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert "encryption-config [secrets] kms apiVersion" in failed, d
    assert "encryption-config [secrets] kms cachesize" in failed, d
    assert "encryption-config [secrets] kms fallback" in dict(d.marks("!")), d
    # a config for another socket: no provider points at us
    d2 = doctor({"socket": {"path": sock + "x"}}, "--encryption-config", enc_config(tmp_path, sock))
    assert d2.rc == 1, d2
    assert "no kms provider with endpoint unix://" + sock + "x" in dict(d2.marks("✗"))["encryption-config"]


def test_usage_errors_exit_64(plugin_bin):
    for args in ([], ["--config"], ["--nope"], ["--config", "/x", "--output", "xml"]):
        r = subprocess.run([plugin_bin, "doctor", *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 64, (args, r.stderr)
        assert "Usage: trousseau doctor" in r.stderr


# ---- vault.secondary ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bao2(it_dir):
    """A second OpenBao, private to this module, with a PKI of its own: trusting the primary's CA
    or presenting the primary's client certificate fails against it."""
    d = tempfile.mkdtemp(prefix="bao-doctor-secondary-", dir=it_dir)
    os.chmod(d, 0o755)
    pki2 = make_pki(os.path.join(d, "pki"), key_owner=(PLUGIN_UID, PLUGIN_GID))
    s = OpenBao(d, pki2)
    try:
        s.setup()
    except Exception:
        s.stop()
        raise
    yield s
    s.stop()


def secondary(b2, token_file, **over):
    sec = {
        "addresses": [b2.addr],
        "transit": {"mount": b2.mount, "key": b2.key},
        "tls": {"ca_file": b2.pki.ca_file, "client_cert_file": b2.pki.client_cert_file,
                "client_key_file": b2.pki.client_key_file},
        "auth": {"method": "token", "token_file": token_file},
        "timeouts": {"connect": "1s", "request": "3s"},
        "policy": "best_effort",
    }
    sec.update(over)
    return {"vault": {"secondary": sec}}


def test_secondary_checked_like_the_primary(doctor, bao, bao2, it_dir):
    b2 = bao2
    while b2.latest_version() <= bao.latest_version():  # differs from the primary's version:
        b2.rotate_key()                                   # the check reads the right key
    tf2 = token_file_for(b2, it_dir, policy())
    d = doctor(secondary(b2, tf2))
    assert d.rc == 0, d
    assert not d.marks("✗") and not d.marks("!"), d
    ok = dict(d.marks("✓"))
    sec = f"secondary vault {b2.addr}"
    for want in ("file vault.secondary.tls.ca_file", "file vault.secondary.tls.client_key_file",
                 "file vault.secondary.auth.token_file", f"{sec} tls material",
                 f"{sec} auth credentials", f"{sec} tcp", f"{sec} tls", f"{sec} health",
                 f"{sec} clock", f"{sec} login", f"{sec} token",
                 f"{sec} transit key {TRANSIT_MOUNT}/{TRANSIT_KEY} type",
                 f"{sec} capabilities {ENC}", f"{sec} capabilities {KEYS}",
                 # the primary's checks are all still there, under their own names
                 f"vault {bao.addr} tls", "vault login", f"capabilities {KEYS}"):
        assert want in ok, (want, d)
    assert f"verified against {b2.pki.ca_file}" in ok[f"{sec} tls"]
    assert "handshake with the client certificate accepted" in ok[f"{sec} tls"]
    latest2 = b2.latest_version()
    assert latest2 != bao.latest_version()
    assert f"latest_version {latest2}," in ok[f"{sec} transit key {TRANSIT_MOUNT}/{TRANSIT_KEY} versions"]
    assert (f"latest_version {bao.latest_version()},"
            in ok[f"transit key {TRANSIT_MOUNT}/{TRANSIT_KEY} versions"])
    assert "secondary: 1 vault address(es)" in ok["config"] and "policy best_effort" in ok["config"]
    with open(tf2) as f:
        token = f.read().strip()
    assert token not in d.out and token not in d.err


def test_secondary_with_the_primary_ca_fails_naming_the_secondary(doctor, bao, bao2, it_dir):
    b2 = bao2
    tf2 = token_file_for(b2, it_dir, policy())
    d = doctor(secondary(b2, tf2, tls={"ca_file": bao.pki.ca_file,
                                       "client_cert_file": b2.pki.client_cert_file,
                                       "client_key_file": b2.pki.client_key_file}))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    sec = f"secondary vault {b2.addr}"
    assert "certificate verification failed" in failed[f"{sec} tls"], d
    assert f"fix: vault.secondary.tls.ca_file ({bao.pki.ca_file}) must hold the CA" in d.out
    assert f"{sec} api" in failed  # nothing else asked of it
    # the primary, with that same CA, passes
    assert f"vault {bao.addr} tls" in dict(d.marks("✓"))
    assert all(n.startswith("secondary vault ") for n in failed), d


def test_secondary_with_the_primary_client_certificate_fails(doctor, bao, bao2, it_dir):
    b2 = bao2
    tf2 = token_file_for(b2, it_dir, policy())
    d = doctor(secondary(b2, tf2, tls={"ca_file": b2.pki.ca_file,
                                       "client_cert_file": bao.pki.client_cert_file,
                                       "client_key_file": bao.pki.client_key_file}))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert f"secondary vault {b2.addr} tls" in failed, d
    assert bao.pki.client_cert_file in d.out  # the fix names the certificate it presented
    assert all(n.startswith("secondary vault ") for n in failed), d


def test_secondary_token_without_read_on_its_key_fails(doctor, bao2, it_dir):
    b2 = bao2
    d = doctor(secondary(b2, token_file_for(b2, it_dir, policy(keys=()))))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    sec = f"secondary vault {b2.addr}"
    assert "permission denied reading " + KEYS in failed[f"{sec} transit key {TRANSIT_MOUNT}/{TRANSIT_KEY}"], d
    assert "missing 'read'" in failed[f"{sec} capabilities {KEYS}"]
    assert f"transit key {TRANSIT_MOUNT}/{TRANSIT_KEY} type" in dict(d.marks("✓"))  # the primary's


def test_secondary_unreachable_fails_naming_it(doctor, bao2, it_dir):
    d = doctor(secondary(bao2, bao2.token_file, addresses=["https://127.0.0.1:1"]))
    assert d.rc == 1, d
    failed = dict(d.marks("✗"))
    assert "Connection refused" in failed["secondary vault https://127.0.0.1:1 tcp"], d
    assert "no secondary Vault node" in failed["secondary vault https://127.0.0.1:1 api"]
    assert "vault login" in dict(d.marks("✓"))  # the primary is fine
