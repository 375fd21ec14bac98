"""Kubernetes auth against a real TokenReview (issue 7 part 5).

tests/e2e/tokenreview_test.go (TestKubernetesAuthTokenReview) starts etcd and a real
kube-apiserver whose Secrets are encrypted through the harness's `plugin` (token auth: the
plugin kube-apiserver depends on cannot log in through that apiserver before it is up), creates
ServiceAccounts and a system:auth-delegator binding, and hands over TokenRequest tokens. Here:
OpenBao's kubernetes auth method is pointed at that apiserver (its URL, its CA, the reviewer's
token); a SECOND plugin, `vault.auth.method: kubernetes` with the trousseau SA's token, logs in
(OpenBao asks the apiserver's TokenReview) and round-trips; a third, with another SA's token, is
refused and says so in its Status healthz. The Go test then checks in kube-apiserver's metrics
that the TokenReviews were served and none was forbidden.

The unit-level TokenReview stub tests stay in test_auth.py (fast, no Go build; they also cover a
review that says authenticated=false, which a real apiserver gives only for a bad token).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from itlib.auth_setup import cred_dir, enable_auth, token_params, write_credential
from test_auth import (assert_logged_in, assert_no_secret_in_output, auth_overrides,
                       healthz_failure, round_trip, wait_ok)
from test_e2e import E2E_DIR
from test_e2e_ha import assert_go_test_passed, build_e2e_binaries

pytestmark = [pytest.mark.plugin, pytest.mark.slow, pytest.mark.e2e]

MOUNT = "e2e-kubernetes"
ROLE = "trousseau"
HANDOFF_TIMEOUT = 8 * 60    # test binary compile + etcd + kube-apiserver on a loaded machine
GO_TEST_TIMEOUT = 12 * 60


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def test_kubernetes_auth_against_a_real_kube_apiserver_token_review(plugin, plugin_factory, bao,
                                                                     it_dir):
    go, env = build_e2e_binaries()
    hdir = tempfile.mkdtemp(prefix="tokenreview-", dir=it_dir)
    env["TROUSSEAU_SOCKET"] = plugin.socket_path          # the apiserver's own (token) plugin
    env["TROUSSEAU_ROTATE_CMD"] = "true"                  # required by loadEnv; unused here
    env["TROUSSEAU_TR_DIR"] = hdir
    log = open(os.path.join(hdir, "go-test.log"), "w+")
    proc = subprocess.Popen([go, "test", "-run", "^TestKubernetesAuthTokenReview$", "-count=1",
                             "-v", "-timeout", "11m", "."], cwd=E2E_DIR, env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    secrets: list[str] = []
    try:
        handoff = os.path.join(hdir, "handoff.json")
        deadline = time.monotonic() + HANDOFF_TIMEOUT
        while not os.path.exists(handoff):
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"go test exited {proc.returncode} before the handoff:\n{log.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no handoff from the Go test within {HANDOFF_TIMEOUT} s")
            time.sleep(0.5)
        h = json.loads(_read(handoff))
        reviewer, sa_jwt, intruder = (_read(h[k]) for k in
                                      ("reviewer_jwt_file", "plugin_jwt_file", "intruder_jwt_file"))
        secrets = [reviewer, sa_jwt, intruder]

        # OpenBao's kubernetes auth method, against the real apiserver
        enable_auth(bao, MOUNT, "kubernetes")
        bao.api_ok("POST", f"auth/{MOUNT}/config", {
            "kubernetes_host": h["apiserver_url"],
            "kubernetes_ca_cert": _read(h["ca_file"]) + "\n",
            "token_reviewer_jwt": reviewer,
            "disable_local_ca_jwt": True,
        })
        role = {"bound_service_account_names": [h["service_account"]],
                "bound_service_account_namespaces": [h["namespace"]]}
        role.update(token_params("1h", "4h"))
        bao.api_ok("POST", f"auth/{MOUNT}/role/{ROLE}", role)

        creds = cred_dir(it_dir)
        good = write_credential(os.path.join(creds, "e2e-sa-trousseau.jwt"), sa_jwt)
        bad = write_credential(os.path.join(creds, "e2e-sa-intruder.jwt"), intruder)

        # a second plugin (not the apiserver's) logs in as the trousseau ServiceAccount
        t0 = time.monotonic()
        pl = plugin_factory.start(auth_overrides(
            {"method": "kubernetes", "mount": MOUNT, "role": ROLE, "jwt_file": good}))
        wait_ok(pl, timeout=30)
        round_trip(pl)
        login = assert_logged_in(pl, "kubernetes", MOUNT)
        print(f"\n[e2e-tokenreview] kubernetes login via the real TokenReview: healthz ok "
              f"{time.monotonic() - t0:.1f} s after start, login took {login['duration_ms']} ms")
        assert_no_secret_in_output(pl, *secrets)

        # another ServiceAccount's (valid) token is refused, with a clear unhealthy Status
        pl2 = plugin_factory.start(auth_overrides(
            {"method": "kubernetes", "mount": MOUNT, "role": ROLE, "jwt_file": bad}))
        st = healthz_failure(pl2, f"vault auth kubernetes (mount {MOUNT})", timeout=30)
        assert "login refused" in st.healthz, st.healthz
        # refused for its identity (the role's bound SA names), not as a malformed token
        assert "service account name not authorized" in st.healthz, st.healthz
        print(f"[e2e-tokenreview] intruder SA refused; Status healthz: {st.healthz!r}")
        assert_no_secret_in_output(pl2, *secrets)
        # the healthy plugin is unaffected
        round_trip(pl)
        open(os.path.join(hdir, "done"), "w").close()
    except BaseException:
        open(os.path.join(hdir, "failed"), "w").close()
        raise
    finally:
        try:
            proc.wait(timeout=GO_TEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        out = log.read()
        log.close()
    assert_go_test_passed(proc.returncode, out, "TestKubernetesAuthTokenReview", bao.root_token,
                          *secrets)
