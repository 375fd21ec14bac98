"""The local demo: a real OpenBao (TLS + mutual TLS, raft storage) on loopback, the trousseau
plugin on a Unix socket, and Secrets round-tripped through the real Kubernetes KMS v2 client
(k8s.io/apiserver's encryptionconfig, the code kube-apiserver runs). Run via scripts/demo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from itlib import stubs  # noqa: E402
from itlib.openbao import PLUGIN_GID, PLUGIN_UID, OpenBao  # noqa: E402
from itlib.pki import make_pki  # noqa: E402
from itlib.plugin import Plugin  # noqa: E402

BOLD, DIM, GREEN, RED, END = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"


def step(msg: str) -> None:
    print(f"\n{BOLD}==> {msg}{END}", flush=True)


def info(msg: str) -> None:
    print(f"    {msg}", flush=True)


def main() -> int:
    binary = os.environ.get("TROUSSEAU_BIN", os.path.join(REPO, "build/release/src/trousseau"))
    work = tempfile.mkdtemp(prefix="trousseau-demo-")
    os.chmod(work, 0o755)
    run = os.path.join(work, "run")
    os.makedirs(run, mode=0o755)
    as_root = os.geteuid() == 0
    bao = plugin = None
    try:
        step("Generating a test CA, an OpenBao server certificate and a client certificate")
        pki = make_pki(os.path.join(work, "pki"), key_owner=(PLUGIN_UID, PLUGIN_GID) if as_root else None)
        info(f"CA: {pki.ca_file}")

        step("Starting OpenBao on 127.0.0.1 (TLS, client certificates required)")
        bao = OpenBao(work, pki)
        bao.setup()
        info(f"address {bao.addr}; transit key {bao.mount}/{bao.key}; policy 'trousseau' "
             f"(update encrypt/decrypt, read key) on a token in {bao.token_file}")

        step("Starting the trousseau plugin")
        v2, v1 = stubs.generate(os.path.join(work, "stubs"))
        # The plugin creates the socket directory itself, so it can remove its socket after
        # dropping privileges.
        sock = os.path.join(run, "kmsplugin", "trousseau.sock")
        cfg = {
            "socket": {"path": sock},
            "vault": {
                "addresses": [bao.addr],
                "transit": {"mount": bao.mount, "key": bao.key},
                "tls": {"ca_file": pki.ca_file, "client_cert_file": pki.client_cert_file,
                        "client_key_file": pki.client_key_file},
                "auth": {"method": "token", "token_file": bao.token_file},
            },
            "status": {"refresh_period": "2s"},
            "log": {"level": "info"},
        }
        plugin = Plugin(binary, work, "trousseau", cfg, v2, v1)
        plugin.socket_path = sock
        plugin.spawn()
        plugin.wait_ready(20)
        st = plugin.wait_healthz(lambda s: s.healthz == "ok", 20, "healthz ok")
        pid = plugin.proc.pid
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
        info(f"socket {sock} (mode {oct(os.stat(sock).st_mode & 0o777)})")
        info(f"Status: version={st.version} healthz={st.healthz} key_id={st.key_id}")
        info(f"process: uid {status['Uid'].split()[0]}, seccomp mode {status['Seccomp'].strip()}, "
             f"no_new_privs {status['NoNewPrivs'].strip()}, CapEff {status['CapEff'].strip()}")

        def roundtrip(n: int) -> None:
            cmd = ["go", "run", "./cmd/kms-roundtrip", "-socket", sock, "-name", "trousseau",
                   "-n", str(n)]
            info(DIM + "$ (tests/conformance) " + " ".join(cmd) + END)
            r = subprocess.run(cmd, cwd=os.path.join(REPO, "tests", "conformance"), text=True)
            if r.returncode != 0:
                raise SystemExit(f"{RED}kms-roundtrip failed ({r.returncode}){END}")

        step("Round-tripping Secrets through the Kubernetes KMS v2 client (k8s.io/apiserver)")
        info("first run compiles the Go harness; this can take a minute or two on a fresh machine")
        roundtrip(3)

        step("Rotating the transit key in OpenBao")
        new = bao.rotate_key()
        info(f"transit key {bao.key} is now at version {new}; waiting for the plugin's Status")
        st = plugin.wait_healthz(lambda s: s.key_id.endswith(f":v{new}"), 20, "new key_id")
        info(f"Status key_id is now {st.key_id}")
        roundtrip(2)

        step("Audit records written by the plugin (one JSON line per KMS call)")
        audits = [l for l in plugin.stderr_text().splitlines() if '"type":"audit"' in l]
        for line in audits[-4:]:
            info(DIM + line + END)

        print(f"\n{GREEN}{BOLD}Demo complete:{END} OpenBao + trousseau + the Kubernetes KMS client "
              f"agreed end to end.")
        return 0
    finally:
        if plugin is not None and plugin.running():
            rc = plugin.terminate(10)
            print(f"\n    plugin stopped (exit {rc}); socket removed: {not os.path.exists(plugin.socket_path)}")
        if bao is not None:
            bao.stop()
        if not os.environ.get("TROUSSEAU_DEMO_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
