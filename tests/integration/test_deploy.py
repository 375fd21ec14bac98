"""The deployment pieces: scripts/vault-setup against a real OpenBao, and the manifests agree
with each other and with what the plugin accepts."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import yaml

from itlib.openbao import PLUGIN_GID, PLUGIN_UID
from test_core import wait_ok

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MANIFESTS = os.path.join(REPO, "manifests")


def run_setup(bao, out, *extra):
    env = bao.cli_env()
    env["PATH"] = os.path.dirname(bao.bao) + os.pathsep + env.get("PATH", "")
    return subprocess.run([os.path.join(REPO, "scripts", "vault-setup"), "--token-out", out, *extra],
                          env=env, capture_output=True, text=True, timeout=60)


def test_vault_setup_makes_a_least_privilege_token_the_plugin_can_use(plugin_factory, bao, it_dir):
    out_dir = os.path.join(it_dir, "setup")
    os.makedirs(out_dir, mode=0o755, exist_ok=True)
    out = os.path.join(out_dir, "token")
    args = ("--mount", "transit-setup", "--key", "k8s-setup", "--policy", "trousseau-setup")
    r = run_setup(bao, out, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "==> creating transit key 'transit-setup/k8s-setup'" in r.stdout
    assert os.stat(out).st_mode & 0o777 == 0o600
    token = open(out).read().strip()
    assert token and token not in r.stdout + r.stderr

    info = bao.api_ok("POST", "auth/token/lookup", {"token": token}).body["data"]
    assert info["policies"] == ["trousseau-setup"]
    assert info["renewable"] is True and int(info["period"]) == 86400

    # The token can do exactly what the plugin needs and no more.
    caps = bao.api_ok("POST", "sys/capabilities", {"token": token, "paths": [
        "transit-setup/encrypt/k8s-setup", "transit-setup/keys/k8s-setup",
        "transit-setup/encrypt/typo", "transit-setup/keys/k8s-setup/rotate",
        "transit/encrypt/kubernetes"]}).body
    assert caps["transit-setup/encrypt/k8s-setup"] == ["update"]
    assert caps["transit-setup/keys/k8s-setup"] == ["read"]
    for denied in ("transit-setup/encrypt/typo", "transit-setup/keys/k8s-setup/rotate",
                   "transit/encrypt/kubernetes"):
        assert caps[denied] == ["deny"], denied

    # Re-running keeps the key (no rotation, no recreation).
    before = bao.api_ok("GET", "transit-setup/keys/k8s-setup").body["data"]["latest_version"]
    r2 = run_setup(bao, out, *args)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "exists (left as it is)" in r2.stdout
    assert bao.api_ok("GET", "transit-setup/keys/k8s-setup").body["data"]["latest_version"] == before

    os.chown(out, PLUGIN_UID, PLUGIN_GID)
    pl = plugin_factory.start({"vault": {"transit": {"mount": "transit-setup", "key": "k8s-setup"},
                                         "auth": {"token_file": out}}})
    st = wait_ok(pl)
    assert st.key_id == "transit-setup/k8s-setup:v1"
    seed = os.urandom(32)
    assert pl.decrypt(pl.encrypt(seed).ciphertext).plaintext == seed


def test_vault_setup_refuses_bad_arguments(bao, it_dir):
    r = run_setup(bao, os.path.join(it_dir, "never"), "--key", "bad key")
    assert r.returncode == 2 and "bad --key" in r.stderr
    r = subprocess.run([os.path.join(REPO, "scripts", "vault-setup")], capture_output=True, text=True)
    assert r.returncode == 2 and "--token-out FILE is required" in r.stderr


def load(name):
    with open(os.path.join(MANIFESTS, name)) as f:
        return yaml.safe_load(f)


def test_manifests_agree_on_paths():
    pod = load("trousseau.yaml")
    cfg = load("config.yaml")
    enc = load("encryption-config.yaml")
    with open(os.path.join(MANIFESTS, "kubeadm", "kube-apiserver+json.yaml")) as f:
        patch = yaml.safe_load(f)

    sock = cfg["socket"]["path"]
    kms = enc["resources"][0]["providers"][0]["kms"]
    assert kms["endpoint"] == "unix://" + sock and kms["apiVersion"] == "v2"
    assert enc["resources"][0]["providers"][-1] == {"identity": {}}

    c = pod["spec"]["containers"][0]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert os.path.dirname(sock) in mounts
    assert "/etc/trousseau" in mounts and mounts["/etc/trousseau"]["readOnly"]
    assert "--config" in c["command"] and "/etc/trousseau/config.yaml" in c["command"]
    for path in (cfg["vault"]["tls"]["ca_file"], cfg["vault"]["auth"]["token_file"]):
        assert path.startswith("/etc/trousseau/")
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= {"CHOWN", "DAC_READ_SEARCH", "SETUID", "SETGID", "SETPCAP",
                                             "SYS_NICE"}
    prof = pod["spec"]["securityContext"]["seccompProfile"]
    assert prof["type"] == "Localhost" and prof["localhostProfile"].endswith("trousseau.json")
    assert pod["spec"]["hostNetwork"] is True

    assert all(op["op"] == "add" for op in patch)
    flags = [op["value"] for op in patch if op["path"] == "/spec/containers/0/command/-"]
    assert "--encryption-provider-config=/etc/kubernetes/enc/encryption-config.yaml" in flags
    mounted = [op["value"]["mountPath"] for op in patch
               if op["path"] == "/spec/containers/0/volumeMounts/-"]
    assert os.path.dirname(sock) in mounted and "/etc/kubernetes/enc" in mounted


def test_probes_use_livez_on_the_configured_listener():
    pod = load("trousseau.yaml")
    cfg = load("config.yaml")
    c = pod["spec"]["containers"][0]
    host, port = cfg["http"]["listen"].rsplit(":", 1)
    assert host == "127.0.0.1"
    for name in ("startupProbe", "livenessProbe"):
        probe = c[name]
        get = probe["httpGet"]
        # /livez never depends on Vault: a Vault outage must not restart the plugin.
        assert get["path"] == "/livez", name
        assert get["host"] == host and int(get["port"]) == int(port), name
        assert get.get("scheme", "HTTP") == "HTTP", name
        # The check gives up after 1 s inside the plugin; the probe must wait longer than that.
        assert probe["timeoutSeconds"] >= 2, name
    startup, live = c["startupProbe"], c["livenessProbe"]
    # Startup: a generous window for a loaded node at boot; liveness: a few misses, not one.
    assert 30 <= startup["periodSeconds"] * startup["failureThreshold"] <= 300
    assert live["failureThreshold"] >= 3
    assert 20 <= live["periodSeconds"] * live["failureThreshold"] <= 120
    assert "readinessProbe" not in c or c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_policy_file_grants_exactly_what_the_plugin_needs():
    text = open(os.path.join(MANIFESTS, "vault", "trousseau-policy.hcl")).read()
    rules = dict(re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', text))
    assert rules == {
        "transit/encrypt/kubernetes": '"update"',
        "transit/decrypt/kubernetes": '"update"',
        "transit/keys/kubernetes": '"read"',
        "auth/token/lookup-self": '"read"',
        "auth/token/renew-self": '"update"',
        "sys/capabilities-self": '"update"',  # for `trousseau doctor`
    }


def test_example_config_passes_check_config(plugin_bin, bao, it_dir):
    """manifests/config.yaml, with its /etc/trousseau files pointed at real test files."""
    text = open(os.path.join(MANIFESTS, "config.yaml")).read()
    d = os.path.join(it_dir, "example-config")
    os.makedirs(d, exist_ok=True)
    p = bao.pki
    files = {"/etc/trousseau/vault-ca.pem": p.ca_file, "/etc/trousseau/client.pem": p.client_cert_file,
             "/etc/trousseau/client-key.pem": p.client_key_file, "/etc/trousseau/token": bao.token_file}
    for k, v in files.items():
        text = text.replace(k, v)
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([plugin_bin, "check-config", "--config", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("config ok:")
    assert "client certificate" in r.stdout


def test_check_config_names_the_bad_key(plugin_bin, it_dir):
    path = os.path.join(it_dir, "bad-config.yaml")
    with open(path, "w") as f:
        f.write("vault:\n  adresses: [https://x:8200]\n")
    r = subprocess.run([plugin_bin, "check-config", "--config", path], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "vault.adresses" in r.stderr
