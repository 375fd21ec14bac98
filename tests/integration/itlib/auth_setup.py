"""Auth methods on the session OpenBao for tests/integration/test_auth.py.

Every method is enabled at a custom mount (so the plugin's `vault.auth.mount` is exercised), its
role bound to the `trousseau` policy only (no default policy: that policy grants lookup-self and
renew-self, which the plugin needs). Credential files are written into a 0755 directory, owned by
the plugin's uid/gid when the tests run as root, mode 0400.

Nothing here prints a credential.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .openbao import PLUGIN_GID, PLUGIN_UID, POLICY_NAME, OpenBao

JWT_AUDIENCE = "trousseau-it"
JWT_ISSUER = "https://issuer.trousseau-it.invalid"


# ---------------------------------------------------------------- files
def write_credential(path: str, content: str, mode: int = 0o400) -> str:
    """Atomically writes a credential file owned by the plugin's uid (when root)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content + "\n")
    if os.geteuid() == 0:
        os.chown(tmp, PLUGIN_UID, PLUGIN_GID)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def cred_dir(it_dir: str) -> str:
    d = os.path.join(it_dir, "auth")
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    return d


# ---------------------------------------------------------------- OpenBao helpers
def enable_auth(bao: OpenBao, mount: str, kind: str) -> None:
    mounts = bao.api_ok("GET", "sys/auth").body
    table = mounts.get("data", mounts)
    if f"{mount}/" in table:
        return
    bao.api_ok("POST", f"sys/auth/{mount}", {"type": kind})


def token_params(ttl: str, max_ttl: str) -> dict:
    return {
        "token_policies": [POLICY_NAME],
        "token_no_default_policy": True,
        "token_ttl": ttl,
        "token_max_ttl": max_ttl,
    }


def tokens_of_mount(bao: OpenBao, mount: str) -> list[str]:
    """Accessors of the live tokens issued by auth/<mount>/login."""
    r = bao.api_ok("LIST", "auth/token/accessors")
    out = []
    for acc in r.body["data"]["keys"]:
        info = bao.api("POST", "auth/token/lookup-accessor", {"accessor": acc})
        if info.status != 200:
            continue
        if info.body["data"].get("path") == f"auth/{mount}/login":
            out.append(acc)
    return out


def revoke_tokens_of_mount(bao: OpenBao, mount: str) -> int:
    """Revokes every live token issued by auth/<mount>/login; returns how many."""
    accs = tokens_of_mount(bao, mount)
    for acc in accs:
        bao.api_ok("POST", "auth/token/revoke-accessor", {"accessor": acc})
    return len(accs)


# ---------------------------------------------------------------- AppRole
def setup_approle(bao: OpenBao, it_dir: str, mount: str, role: str = "trousseau",
                  ttl: str = "1h", max_ttl: str = "4h") -> dict:
    """Enables AppRole at `mount`, writes the role and returns the plugin's auth config."""
    enable_auth(bao, mount, "approle")
    bao.api_ok("POST", f"auth/{mount}/role/{role}", token_params(ttl, max_ttl))
    role_id = bao.api_ok("GET", f"auth/{mount}/role/{role}/role-id").body["data"]["role_id"]
    secret_id = bao.api_ok("POST", f"auth/{mount}/role/{role}/secret-id").body["data"]["secret_id"]
    d = cred_dir(it_dir)
    tag = mount.replace("/", "_")
    return {
        "method": "approle",
        "mount": mount,
        "role_id_file": write_credential(os.path.join(d, f"{tag}-role_id"), role_id),
        "secret_id_file": write_credential(os.path.join(d, f"{tag}-secret_id"), secret_id),
    }


# ---------------------------------------------------------------- TLS certificates
def setup_cert(bao: OpenBao, mount: str, role: str = "trousseau", ttl: str = "1h",
               max_ttl: str = "4h") -> dict:
    """Enables cert auth at `mount`: the test CA's client certificate is the identity."""
    enable_auth(bao, mount, "cert")
    with open(bao.pki.ca_file) as f:
        ca_pem = f.read()
    body = {"certificate": ca_pem, "allowed_common_names": ["trousseau-client"],
            "display_name": "trousseau-it"}
    body.update(token_params(ttl, max_ttl))
    bao.api_ok("POST", f"auth/{mount}/certs/{role}", body)
    return {"method": "cert", "mount": mount, "name": role}


# ---------------------------------------------------------------- JWT (RS256, hand-rolled)
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class JwtSigner:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT"}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(sig)

    def token(self, subject: str = "system:serviceaccount:kube-system:trousseau",
              lifetime: int = 3600, **extra) -> str:
        now = int(time.time())
        claims = {"iss": JWT_ISSUER, "sub": subject, "aud": JWT_AUDIENCE, "iat": now,
                  "nbf": now - 5, "exp": now + lifetime}
        claims.update(extra)
        return self.sign(claims)


def setup_jwt(bao: OpenBao, it_dir: str, mount: str, signer: JwtSigner, role: str = "trousseau",
              ttl: str = "1h", max_ttl: str = "4h") -> dict:
    enable_auth(bao, mount, "jwt")
    bao.api_ok("POST", f"auth/{mount}/config",
               {"jwt_validation_pubkeys": [signer.public_pem()], "bound_issuer": JWT_ISSUER})
    body = {"role_type": "jwt", "user_claim": "sub", "bound_audiences": [JWT_AUDIENCE]}
    body.update(token_params(ttl, max_ttl))
    bao.api_ok("POST", f"auth/{mount}/role/{role}", body)
    jwt_file = write_credential(os.path.join(cred_dir(it_dir), f"{mount}-jwt"), signer.token())
    return {"method": "jwt", "mount": mount, "role": role, "jwt_file": jwt_file}


# ---------------------------------------------------------------- Kubernetes (stub TokenReview)
class TokenReviewStub:
    """A tiny HTTPS kube-apiserver stand-in answering only TokenReview, with the test server
    certificate (127.0.0.1). `accept` decides whether reviews succeed."""

    def __init__(self, pki, namespace: str = "kube-system", name: str = "trousseau"):
        self.namespace = namespace
        self.name = name
        self.accept = True
        self.reviews = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    spec = json.loads(self.rfile.read(length) or b"{}").get("spec") or {}
                except ValueError:
                    spec = {}
                stub.reviews += 1
                # an audience-aware review echoes the audiences it was asked about
                status = {"authenticated": stub.accept, "audiences": spec.get("audiences") or []}
                if stub.accept:
                    status["user"] = {
                        "username": f"system:serviceaccount:{stub.namespace}:{stub.name}",
                        "uid": "0c8d6b1e-0000-4000-8000-000000000001",
                        "groups": ["system:serviceaccounts"]}
                else:
                    status["error"] = "token review stub: rejected"
                body = json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                   "kind": "TokenReview", "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert_file, pki.server_key_file)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def setup_kubernetes(bao: OpenBao, it_dir: str, mount: str, stub: TokenReviewStub,
                     signer: JwtSigner, role: str = "trousseau") -> dict:
    enable_auth(bao, mount, "kubernetes")
    with open(bao.pki.ca_file) as f:
        ca_pem = f.read()
    bao.api_ok("POST", f"auth/{mount}/config", {
        "kubernetes_host": stub.url,
        "kubernetes_ca_cert": ca_pem,
        "token_reviewer_jwt": signer.token(subject="system:serviceaccount:kube-system:reviewer"),
        "disable_local_ca_jwt": True,
    })
    body = {"bound_service_account_names": [stub.name],
            "bound_service_account_namespaces": [stub.namespace]}
    body.update(token_params("1h", "4h"))
    bao.api_ok("POST", f"auth/{mount}/role/{role}", body)
    # A service-account shaped JWT (Vault reads its claims; TokenReview vouches for it).
    sa = signer.token(subject=f"system:serviceaccount:{stub.namespace}:{stub.name}",
                      iss="kubernetes/serviceaccount", aud=["https://kubernetes.default.svc"],
                      **{"kubernetes.io/serviceaccount/namespace": stub.namespace,
                         "kubernetes.io/serviceaccount/service-account.name": stub.name,
                         "kubernetes.io/serviceaccount/service-account.uid":
                             "0c8d6b1e-0000-4000-8000-000000000001"})
    jwt_file = write_credential(os.path.join(cred_dir(it_dir), f"{mount}-sa-token"), sa)
    return {"method": "kubernetes", "mount": mount, "role": role, "jwt_file": jwt_file}


# ---------------------------------------------------------------- plugin log
def log_events(plugin, event: str | None = None) -> list[dict]:
    """The plugin's JSON log lines (stderr), optionally only those with `event`."""
    out = []
    # settled: lines are written by the plugin's log writer thread just after they are logged
    for line in plugin.settled_stderr_text(quiet=0.1, timeout=1.0).splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if event is None or j.get("event") == event:
            out.append(j)
    return out
