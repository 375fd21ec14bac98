#!/usr/bin/env python3
"""Every contender against one real OpenBao, in one run, on loopback (issue 9's benchmark).

Contenders (each measured with the same client, `trousseau-bench`, Encrypt+Decrypt round trips of
32-byte seeds):
  floor               straight to OpenBao Transit over the same mutual TLS, one kept-alive
                      connection per thread (libcurl): what any client must pay
  trousseau           the real `trousseau serve`, coalescing/batching off
                      (`performance: {coalesce_decrypts: false, batch_max_items: 1}`; a binary
                      whose config parser refuses `performance:` runs without it, and the run says so)
  trousseau+coalesce  the same binary with `performance: {coalesce_decrypts: true,
                      batch_max_items: 64, batch_max_wait: 200us}` (skipped, with the parser's
                      reason, when the binary refuses it)
  go-peer             FalcoSuessgott/vault-kubernetes-kms at a pinned revision (built outside the
                      project from a fetched snapshot; missing with a reason otherwise)
  null / echo         trousseau-null-server: Trousseau's KMS layer over a backend that answers
                      at once, and a bare gRPC echo of the same proto (the plugin's own cost)
  extra:NAME          --extra-plugin NAME=PATH: more Trousseau binaries, configured as `trousseau`

For c in --concurrency: p50/p99, throughput, plugin CPU per KMS call (utime+stime from
/proc/<pid>/stat), OpenBao CPU per KMS call; at c=64 (or the largest c below it) a second load run
with a paced Status prober beside it (Status p99 under load); RSS idle and after the largest c.
Then the cold-start burst (distinct seeds decrypted several times each at high concurrency), with
Vault calls counted from OpenBao's telemetry and from the plugins' /metrics; then an idle window
in which each plugin's Vault requests are counted and extrapolated to an hour.

Run through bench/run. A benchmark measures: nothing here decides whether a number is good
(docs/benchmarks.md lists the targets and whether one run met them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from itlib import stubs  # noqa: E402
from itlib.openbao import PLUGIN_GID, PLUGIN_UID, OpenBao  # noqa: E402
from itlib.pki import make_pki  # noqa: E402
from itlib.plugin import Plugin, PluginError, free_port, merge  # noqa: E402

import report as bench_report  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The Go peer: pinned revision (v1.4.0 + 6 commits, the one issue 9 measured).
PEER_REPO = "FalcoSuessgott/vault-kubernetes-kms"
PEER_REV = "c3bc385fd531b8b9a2ac924d8f57f3d7a5305f28"
PEER_DESCRIBE = "v1.4.0-6-gc3bc385"
PEER_SNAPSHOT = os.environ.get("BENCH_PEER_SNAPSHOT",
                               "/work/.mirror/FalcoSuessgott+vault-kubernetes-kms/repo")
PEER_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "trousseau", f"peer-{PEER_REV}")

PERF_OFF = {"coalesce_decrypts": False, "batch_max_items": 1}
PERF_ON = {"coalesce_decrypts": True, "batch_max_items": 64, "batch_max_wait": "200us"}


def rotated(items: list, p: int) -> list:
    """items starting at index p (mod its length): pass p's order of the contenders."""
    if not items:
        return []
    k = p % len(items)
    return items[k:] + items[:k]


def merge_passes(results: list[dict]) -> dict:
    """One row from several passes of the same measurement: every number that differs between
    passes the median of the passes (each independently), the Status prober's call count summed
    (its percentiles are still per-pass medians); the passes themselves kept under "passes"
    (without the process samples) so the report can show the spread and judge each pass."""
    def med(vals: list[dict], sum_ok: bool) -> dict:
        row = dict(vals[-1])
        for k, v in vals[-1].items():
            xs = [x.get(k) for x in vals]
            if sum_ok and k == "ok" and all(isinstance(x, int) for x in xs):
                row[k] = sum(xs)
            elif all(x == xs[0] for x in xs):
                continue
            elif all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
                row[k] = statistics.median(xs)
            elif all(isinstance(x, dict) for x in xs):
                row[k] = med(xs, sum_ok=k == "status")
        return row
    merged = med(results, sum_ok=False)
    merged.pop("pass", None)  # which pass a run was: meaningful per pass only
    merged["passes"] = [{k: v for k, v in r.items() if k != "proc_after"} for r in results]
    return merged


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    return out


def save_smaps(pid: int, out_dir: str | None, name: str, when: str) -> None:
    """--smaps-dir: a copy of /proc/<pid>/smaps and its status for reading the breakdown
    (docs/performance.md "Where the memory after a burst is")."""
    if not out_dir:
        return
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name.replace(':', '_').replace('+', '_')}.{when}")
    for src in ("smaps", "status"):
        try:
            with open(f"/proc/{pid}/{src}") as f, open(f"{stem}.{src}", "w") as g:
                g.write(f.read())
        except OSError as e:
            log(f"smaps-dir: {name} {when}: {e}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tcp_active_opens() -> int:
    """TCP connections opened so far in this network namespace (/proc/net/snmp ActiveOpens). In
    bench/run's own namespace the delta over a run is the connections made to OpenBao (and the
    metrics scrapes), warm-up included."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def prom_sum(text: str, name: str) -> float:
    """Sum of every sample of metric `name` (all label sets) in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                total += float(line.rsplit(None, 1)[1])
            except ValueError:
                pass
    return total


# ---------------------------------------------------------------------------- plugin startup
# Shared with bench/wipe_cmp.py.
def make_run_dir(path: str) -> None:
    """The socket directory: the plugin drops to 65532 and creates its socket there."""
    os.makedirs(path, mode=0o755)
    if os.geteuid() == 0:
        os.chown(path, PLUGIN_UID, PLUGIN_GID)


def new_openbao(work_dir: str, cls: type[OpenBao] = OpenBao) -> OpenBao:
    """An OpenBao (itlib: mTLS listener, transit key, a token with the plugin's policy) with fresh
    PKI under work_dir, the client key readable by the plugin's uid. Not started: keep it where
    the teardown finds it, then call setup()."""
    pki = make_pki(os.path.join(work_dir, "pki"), key_owner=(PLUGIN_UID, PLUGIN_GID))
    return cls(work_dir, pki)


def plugin_config(bao: OpenBao, sock: str) -> dict:
    """A plugin config serving on `sock` against `bao` with its mTLS files and token."""
    pki = bao.pki
    # No status.refresh_period: the binary's default is what is measured (idle requests).
    return {
        "socket": {"path": sock},
        "vault": {
            "addresses": [bao.addr],
            "transit": {"mount": bao.mount, "key": bao.key},
            "tls": {"ca_file": pki.ca_file, "client_cert_file": pki.client_cert_file,
                    "client_key_file": pki.client_key_file},
            "auth": {"method": "token", "token_file": bao.token_file},
        },
        # The bench measures cost, not shedding: c=256 round trips must not be refused.
        "limits": {"max_in_flight": {"encrypt": 1024, "decrypt": 1024}},
        "log": {"level": "info"},
        "seccomp": {"mode": os.environ.get("TROUSSEAU_SECCOMP", "enforce")},
    }


def start_plugin(p: Plugin, ready_s: float = 20.0, healthz_s: float = 15.0) -> None:
    """Spawns p and waits until it serves on its config's socket with healthz ok; then closes the
    harness's own gRPC channel (not part of the load). Raises PluginError if it does not come up;
    keep p where the teardown finds it before calling."""
    p.spawn()
    p.wait_ready(ready_s)
    p.wait_healthz(lambda r: r.healthz == "ok", healthz_s, "healthz ok")
    p.close_channel()


# ---------------------------------------------------------------------------- the Go peer
def resolve_peer(args) -> tuple[str | None, str]:
    """(binary, note): the peer's binary, or None and why it is missing."""
    if args.peer_bin:
        if os.path.isfile(args.peer_bin) and os.access(args.peer_bin, os.X_OK):
            return args.peer_bin, f"given: {args.peer_bin} (assumed revision {PEER_REV[:12]})"
        return None, f"--peer-bin / BENCH_PEER_BIN {args.peer_bin} is not an executable file"
    cached = os.path.join(PEER_CACHE, "vault-kubernetes-kms")
    if os.path.isfile(cached) and os.access(cached, os.X_OK):
        return cached, f"cached build {cached}"
    if args.no_build:
        return None, (f"not built: {cached} is missing and --no-build was given (build it once "
                      f"with bench/run, or pass --peer-bin)")
    if not os.path.isdir(PEER_SNAPSHOT):
        return None, (f"no snapshot of github.com/{PEER_REPO} at {PEER_SNAPSHOT} (the Go module "
                      f"proxy refuses the module; a snapshot must be fetched first; set "
                      f"BENCH_PEER_SNAPSHOT or --peer-bin)")
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go")
                                else None)
    if go is None:
        return None, "no Go toolchain (go not on PATH, /usr/local/go/bin/go missing)"
    r = subprocess.run(["git", "--git-dir", PEER_SNAPSHOT, "cat-file", "-e", PEER_REV + "^{commit}"],
                       capture_output=True)
    if r.returncode != 0:
        return None, f"the snapshot {PEER_SNAPSHOT} does not hold the pinned revision {PEER_REV}"
    src = os.path.join(PEER_CACHE, "src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    log(f"building the Go peer {PEER_REV[:12]} in {PEER_CACHE} (dependencies from the Go module proxy)")
    archive = subprocess.Popen(["git", "--git-dir", PEER_SNAPSHOT, "archive", PEER_REV],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", src], stdin=archive.stdout, check=True)
    archive.wait()
    env = dict(os.environ, CGO_ENABLED="0",
               PATH=os.path.dirname(go) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run([go, "build", "-trimpath", "-o", cached, "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return None, f"go build failed: {(r.stdout + r.stderr)[-600:]}"
    return cached, f"built now into {cached}"


# ---------------------------------------------------------------------------- contenders
def prober_rt_preexec() -> None:
    """In the Status prober's child before exec: SCHED_FIFO, so that it and every thread it starts
    (gRPC's) run as soon as they are runnable. The prober stands for kube-apiserver's health
    check, whose own scheduling delay is not the plugin's."""
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PROBER_RT_PRIORITY))


PROBER_RT_PRIORITY = 10


class Contender:
    def __init__(self, name: str, kind: str, socket: str | None = None):
        self.name = name
        self.kind = kind          # floor, trousseau, peer, null, echo
        self.socket = socket
        self.proc: subprocess.Popen | None = None
        self.plugin: Plugin | None = None
        self.metrics_url: str | None = None
        self.note = ""

    @property
    def pid(self) -> int | None:
        if self.plugin is not None and self.plugin.proc is not None:
            return self.plugin.proc.pid
        return self.proc.pid if self.proc is not None else None

    def vault_requests(self) -> float | None:
        if self.metrics_url is None:
            return None
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return prom_sum(r.read().decode(), "trousseau_vault_requests_total")

    def stop(self) -> None:
        if self.plugin is not None:
            try:
                self.plugin.terminate(10.0)
            except Exception as e:  # noqa: BLE001
                log(f"{self.name} did not stop cleanly: {e}")
                self.plugin.kill()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class TelemetryOpenBao(OpenBao):
    """The itlib OpenBao with Prometheus telemetry on, so that requests can be counted at the
    server (`vault_core_handle_request_count`)."""

    def write_config(self) -> None:
        super().write_config()
        with open(self.config_file, "a") as f:
            f.write('\ntelemetry {\n  prometheus_retention_time = "1h"\n  disable_hostname = true\n}\n')

    def handled_requests(self) -> float:
        r = self.api("GET", "sys/metrics?format=prometheus")
        if r.status != 200:
            raise RuntimeError(f"sys/metrics: HTTP {r.status}")
        return prom_sum(r.raw.decode(), "vault_core_handle_request_count")


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="trousseau-bench-")
        os.chmod(self.dir, 0o755)
        self.run_dir = os.path.join(self.dir, "run")
        self.bao: TelemetryOpenBao | None = None
        self.contenders: list[Contender] = []
        self.missing: dict[str, str] = {}
        self.out: dict = {"runs": [], "status_under_load": [], "rss_kib": {}, "burst": [],
                          "idle": {}, "contenders": {}, "missing": self.missing,
                          "skipped": [], "failures": []}

    # ------------------------------------------------------------------ setup
    def base_config(self, sock: str) -> dict:
        return plugin_config(self.bao, sock)

    def config_refusal(self, binary: str, name: str, cfg: dict) -> str:
        """"" if `trousseau check-config` accepts cfg, else its first lines."""
        p = Plugin(binary, self.dir, name + "-check", cfg, None, None)
        r = subprocess.run([binary, "check-config", "--config", p.config_file],
                           capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return ""
        return " ".join((r.stderr + r.stdout).strip().splitlines()[:2])[:300]

    def wanted(self, name: str) -> bool:
        """Whether --only (if given) names this contender; extras' +coalesce twins only when
        named."""
        only = self.args.only
        if only is None:
            return not (name.startswith("extra:") and name.endswith("+coalesce"))
        return name in only

    def start_trousseau(self, name: str, binary: str, perf: dict | None, v2, v1) -> Contender | None:
        sock = os.path.join(self.run_dir, f"{name.replace('+', '-').replace(':', '-')}.sock")
        cfg = self.base_config(sock)
        note = ""
        if perf is not None:
            with_perf = merge(cfg, {"performance": perf})
            why = self.config_refusal(binary, name, with_perf)
            if not why:
                cfg = with_perf
                note = "performance: " + json.dumps(perf)
            elif perf.get("coalesce_decrypts"):
                self.missing[name] = f"the config parser refuses `performance:` ({why})"
                log(f"{name}: skipped: {self.missing[name]}")
                return None
            else:
                note = (f"no `performance:` section (this binary's config parser refuses it: {why});"
                        f" it has no coalescing or batching to switch off")
        c = Contender(name, "trousseau", sock)
        c.note = note
        c.plugin = Plugin(binary, self.dir, name.replace("+", "-").replace(":", "-"), cfg, v2, v1)
        self.contenders.append(c)  # before spawning: stop() must find it
        try:
            start_plugin(c.plugin)
        except PluginError as e:
            self.contenders.remove(c)
            c.stop()
            self.missing[name] = f"did not start: {str(e)[:400]}"
            log(f"{name}: {self.missing[name]}")
            return None
        c.metrics_url = f"http://127.0.0.1:{c.plugin.http_port}/metrics"
        log(f"{name} pid {c.pid} on {sock} ({binary}) {note}")
        return c

    def wait_socket(self, c: Contender, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if c.proc is not None and c.proc.poll() is not None:
                raise RuntimeError(f"{c.name} exited with {c.proc.returncode}")
            if os.path.exists(c.socket):
                r = subprocess.run([self.args.bench_bin, "plugin", "--socket", c.socket, "--op",
                                    "status", "--n", "1", "--warmup", "1", "--json"],
                                   capture_output=True, text=True, timeout=30)
                if r.returncode == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{c.name}: no answer on {c.socket} within {timeout:.0f} s")

    def start_process(self, name: str, kind: str, argv: list[str], env: dict | None = None,
                      sock: str = "") -> Contender | None:
        c = Contender(name, kind, sock)
        err = open(os.path.join(self.dir, f"{name}.log"), "wb")
        c.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                                  cwd=self.dir, start_new_session=True)
        err.close()
        self.contenders.append(c)
        try:
            self.wait_socket(c)
        except Exception as e:  # noqa: BLE001
            self.contenders.remove(c)
            c.stop()
            with open(os.path.join(self.dir, f"{name}.log"), errors="replace") as f:
                tail = f.read()[-400:]
            self.missing[name] = f"did not start: {e}: {tail}"
            log(f"{name}: {self.missing[name]}")
            return None
        log(f"{name} pid {c.pid} on {sock}")
        return c

    def start(self) -> None:
        make_run_dir(self.run_dir)
        self.bao = new_openbao(self.dir, TelemetryOpenBao)
        self.bao.setup()
        pki = self.bao.pki
        a, b = self.bao.handled_requests(), self.bao.handled_requests()
        self.scrape_cost = b - a  # requests a scrape itself adds to the count (0 or 1)
        log(f"OpenBao pid {self.bao.proc.pid} ready at {self.bao.addr} (mTLS, telemetry on)")
        if self.wanted("floor"):
            self.contenders.append(Contender("floor", "floor"))
        v2, v1 = stubs.generate(os.path.join(self.dir, "stubs"))
        if self.wanted("trousseau"):
            self.start_trousseau("trousseau", self.args.plugin_bin, PERF_OFF, v2, v1)
        if self.wanted("trousseau+coalesce"):
            self.start_trousseau("trousseau+coalesce", self.args.plugin_bin, PERF_ON, v2, v1)
        for name, path in self.args.extra_plugin:
            ov = self.args.extra_perf.get(name, {})  # --extra-perf NAME:KEY=VALUE
            if self.wanted(f"extra:{name}"):
                self.start_trousseau(f"extra:{name}", path, {**PERF_OFF, **ov}, v2, v1)
            if self.wanted(f"extra:{name}+coalesce"):
                self.start_trousseau(f"extra:{name}+coalesce", path, {**PERF_ON, **ov}, v2, v1)
        # The Go peer.
        peer, note = resolve_peer(self.args) if self.wanted("go-peer") else (None, "not in --only")
        self.out["peer"] = {"repo": PEER_REPO, "revision": PEER_REV, "describe": PEER_DESCRIBE,
                            "binary": peer, "note": note}
        if not self.wanted("go-peer"):
            pass
        elif peer is None:
            self.missing["go-peer"] = note
            log(f"go-peer: MISSING: {note}")
        else:
            sock = os.path.join(self.run_dir, "peer.sock")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            with open(self.bao.token_file) as f:
                token = f.read().strip()
            # The peer's Vault client is hashicorp/vault/api's DefaultConfig: it reads the mutual
            # TLS files from VAULT_CACERT / VAULT_CLIENT_CERT / VAULT_CLIENT_KEY. The token goes
            # in its environment (VAULT_KMS_TOKEN), not on its command line.
            env.update(VAULT_CACERT=pki.ca_file, VAULT_CLIENT_CERT=pki.client_cert_file,
                       VAULT_CLIENT_KEY=pki.client_key_file, VAULT_KMS_TOKEN=token)
            c = self.start_process("go-peer", "peer", [
                peer, "-socket", "unix://" + sock, "-force-socket-overwrite",
                "-vault-address", self.bao.addr, "-auth-method", "token",
                "-transit-mount", self.bao.mount, "-transit-key", self.bao.key,
                "-health-port", str(free_port())], env=env, sock=sock)
            if c is not None:
                c.note = note
        # Trousseau's own cost.
        if self.args.null_bin:
            for mode in ("null", "echo"):
                if not self.wanted(mode):
                    continue
                sock = os.path.join(self.run_dir, f"{mode}.sock")
                self.start_process(mode, mode, [self.args.null_bin, "--mode", mode, "--socket", sock],
                                   sock=sock)
        else:
            self.missing["null"] = self.missing["echo"] = "trousseau-null-server not built"
        for c in self.contenders:
            self.out["contenders"][c.name] = {"kind": c.kind, "note": c.note}

    # ------------------------------------------------------------------ runs
    def bench_cmd(self, c: Contender, op: str, n: int, conc: int, warmup: int | None = None) -> list[str]:
        if warmup is None:
            warmup = max(2, min(20, 200 // conc))
        cmd = [self.args.bench_bin, "vault" if c.kind == "floor" else "plugin", "--n", str(n),
               "--concurrency", str(conc), "--op", op, "--warmup", str(warmup), "--json"]
        if c.kind == "floor":
            p = self.bao.pki
            cmd += ["--addr", self.bao.addr, "--ca", p.ca_file, "--cert", p.client_cert_file,
                    "--key", p.client_key_file, "--token-file", self.bao.token_file,
                    "--mount", self.bao.mount, "--key-name", self.bao.key]
        else:
            cmd += ["--socket", c.socket]
        return cmd

    def over_budget(self, what: str) -> bool:
        if time.monotonic() - self.t0 > self.args.budget:
            self.out["skipped"].append(what)
            return True
        return False

    def load(self, c: Contender, conc: int, n: int, prober: bool = False,
             prober_rt: bool = False) -> dict:
        pid, bpid = c.pid, self.bao.proc.pid
        cpu0 = cpu_seconds(pid) if pid else 0.0
        bcpu0 = cpu_seconds(bpid)
        opens0 = tcp_active_opens()
        vreq0 = c.vault_requests()  # Trousseau contenders only: their own count of Vault requests
        probe = None
        if prober:
            probe = subprocess.Popen(
                [self.args.bench_bin, "plugin", "--socket", c.socket, "--op", "status",
                 "--n", "1000000", "--concurrency", "1", "--warmup", "1",
                 "--pace-us", str(self.args.status_pace_us), "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=prober_rt_preexec if prober_rt else None)
        # The load client's own CPU (utime+stime of the reaped child). For the floor this is what a
        # minimal Vault client (libcurl + OpenSSL + the JSON it needs) spends per Vault call: the
        # same-run reference for Trousseau's Vault path. Read before the prober is reaped.
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(self.bench_cmd(c, "roundtrip", n, conc), capture_output=True, text=True,
                           timeout=300)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        probe_res = None
        if probe is not None:
            probe.send_signal(signal.SIGINT)
            pout, perr = probe.communicate(timeout=30)
            if probe.returncode != 0 or not pout.strip():
                raise RuntimeError(f"Status prober against {c.name} failed: {pout}{perr}")
            probe_res = json.loads(pout.strip().splitlines()[-1])
        cpu1 = cpu_seconds(pid) if pid else 0.0
        bcpu1 = cpu_seconds(bpid)
        opens1 = tcp_active_opens()
        vreq1 = c.vault_requests()
        if r.returncode != 0 or not r.stdout.strip():
            raise RuntimeError(f"trousseau-bench {c.name} roundtrip c={conc} failed "
                               f"(exit {r.returncode}):\n{r.stdout}{r.stderr}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        kms_calls = 2 * (res["ok"] + res["warmup_per_thread"] * res["concurrency"])
        res["contender"] = c.name
        res["kms_calls"] = kms_calls
        res["plugin_cpu_us_per_call"] = (cpu1 - cpu0) * 1e6 / kms_calls if pid else None
        res["bao_cpu_us_per_call"] = (bcpu1 - bcpu0) * 1e6 / kms_calls
        res["client_cpu_us_per_call"] = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) \
            * 1e6 / kms_calls
        res["tcp_connects"] = opens1 - opens0
        # Vault requests the plugin made during the run (a background check may add one), and
        # how many KMS calls each served: 1 without batching or coalescing, more with them.
        res["plugin_vault_requests"] = (vreq1 - vreq0) if vreq0 is not None and vreq1 is not None else None
        res["kms_calls_per_vault_call"] = (kms_calls / res["plugin_vault_requests"]
                                           if res["plugin_vault_requests"] else None)
        if probe_res is not None:
            res["status"] = {k: probe_res[k] for k in ("ok", "p50_us", "p90_us", "p99_us", "max_us")}
        if pid:
            res["proc_after"] = proc_status(pid)
        return res

    def thread_sched(self) -> None:
        """--thread-sched NAME=POLICY[@THREADS]: after start, from outside (the bench is root), set
        the scheduling of a contender's threads, as `chrt -p`/`renice` on their thread ids would:
        for experiments (docs/performance.md, change 15). POLICY: fifo:P, rr:P, other, nice:N.
        THREADS: a thread name (/proc/<pid>/task/*/comm; default kms-status), * for every thread
        there now, or !PREFIX for every thread whose name does not start with PREFIX. Threads
        started later inherit the policy of the thread that starts them (unless it has
        SCHED_RESET_ON_FORK)."""
        for spec in self.args.thread_sched:
            name, _, how = spec.partition("=")
            how, _, comm = how.partition("@")
            comm = comm or "kms-status"
            pol, _, val = how.partition(":")
            c = next((x for x in self.contenders if x.name == name and x.pid), None)
            if c is None:
                raise RuntimeError(f"--thread-sched {spec}: no running contender {name}")
            hits = 0
            for tid in os.listdir(f"/proc/{c.pid}/task"):
                with open(f"/proc/{c.pid}/task/{tid}/comm") as f:
                    tcomm = f.read().strip()
                if comm.startswith("!"):
                    if tcomm.startswith(comm[1:]):
                        continue
                elif comm != "*" and tcomm != comm:
                    continue
                t = int(tid)
                if pol in ("fifo", "rr"):
                    os.sched_setscheduler(t, os.SCHED_FIFO if pol == "fifo" else os.SCHED_RR,
                                          os.sched_param(int(val)))
                elif pol == "other":
                    os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0))
                elif pol == "nice":
                    os.setpriority(os.PRIO_PROCESS, t, int(val))
                else:
                    raise RuntimeError(f"--thread-sched {spec}: unknown policy {pol!r}")
                hits += 1
                log(f"{name}: thread {tid} ({tcomm}) set to {how}")
            if hits == 0:
                raise RuntimeError(f"--thread-sched {spec}: no thread of {name} matched {comm!r}")

    def run_all(self) -> None:
        time.sleep(1.0)
        for c in self.contenders:
            if c.pid:
                self.out["rss_kib"].setdefault(c.name, {})["idle"] = proc_status(c.pid)
                save_smaps(c.pid, self.args.smaps_dir, c.name, "idle")
        self.thread_sched()
        concs = self.args.concurrency
        status_c = max([x for x in concs if x <= 64], default=concs[0])
        passes = self.args.passes
        for conc in concs:
            n = self.args.n1 if conc == 1 else max(self.args.n, conc * 4)
            got: dict[str, list] = {}
            for p in range(passes):
                # Contenders interleaved, the order rotated each pass: a slow spell of the shared
                # machine, or a contender's run warming the next, does not favour one of them.
                order = rotated(self.contenders, p)
                for c in order:
                    if self.over_budget(f"{c.name} c={conc} pass {p + 1}"):
                        continue
                    try:
                        res = self.load(c, conc, n)
                    except RuntimeError as e:
                        self.fail(f"{c.name} c={conc} pass {p + 1}", e)
                        continue
                    res["pass"] = p + 1
                    got.setdefault(c.name, []).append(res)
                    cpu = res["plugin_cpu_us_per_call"]
                    log(f"{c.name:<20} c={conc:<3} p50 {res['p50_us']:9.0f} us  p99 {res['p99_us']:9.0f} us"
                        f"  {res['throughput_per_s']:7.0f} rt/s  plugin CPU "
                        + (f"{cpu:5.0f}" if cpu is not None else "    -")
                        + f" us/call  OpenBao CPU {res['bao_cpu_us_per_call']:5.0f} us/call"
                        + f"  client CPU {res['client_cpu_us_per_call']:5.0f} us/call"
                        + (f"  (pass {p + 1}/{passes})" if passes > 1 else ""))
            for c in self.contenders:
                if got.get(c.name):
                    self.out["runs"].append(merge_passes(got[c.name]))
            if conc == status_c:
                # Status under load: a second run at this c with a paced Status prober beside it.
                modes = {"rt": ["rt"], "normal": ["normal"],
                         "both": ["rt", "normal"]}[self.args.status_prober]
                sgot: dict[tuple, list] = {}
                for p in range(passes):
                    order = rotated(self.contenders, p)
                    for c in order:
                        for mode in modes:
                            if c.kind == "floor" or self.over_budget(f"{c.name} status c={conc} pass {p + 1}"):
                                continue
                            try:
                                res = self.load(c, conc, max(n // 2, conc * 4), prober=True,
                                                prober_rt=mode == "rt")
                            except RuntimeError as e:
                                self.fail(f"{c.name} status c={conc} pass {p + 1}", e)
                                continue
                            res["status_prober"] = mode
                            res["pass"] = p + 1
                            sgot.setdefault((c.name, mode), []).append(res)
                            s = res["status"]
                            log(f"{c.name:<20} Status under c={conc} load ({mode} prober): p50 "
                                f"{s['p50_us']:.0f} us p99 {s['p99_us']:.0f} us ({s['ok']} calls)"
                                + (f"  (pass {p + 1}/{passes})" if passes > 1 else ""))
                for c in self.contenders:
                    for mode in modes:
                        if sgot.get((c.name, mode)):
                            self.out["status_under_load"].append(merge_passes(sgot[(c.name, mode)]))
        for c in self.contenders:
            if c.pid:
                self.out["rss_kib"][c.name]["after"] = proc_status(c.pid)
                save_smaps(c.pid, self.args.smaps_dir, c.name, "after")
        self.out["rss_after_concurrency"] = concs[-1]
        # Again 2 s later: the plugin trims its heap once a second when idle, so the sample right
        # after the run races that trim; the settled figure is the one the target is judged on.
        time.sleep(2.0)
        for c in self.contenders:
            if c.pid:
                self.out["rss_kib"][c.name]["after_2s"] = proc_status(c.pid)
                save_smaps(c.pid, self.args.smaps_dir, c.name, "after2s")

    def fail(self, what: str, e: Exception) -> None:
        """A failed run: its numbers mean nothing. Recorded (the run exits 1 at the end), and the
        other runs go on, so that one timeout on a loaded machine does not void the rest."""
        msg = str(e).strip().splitlines()
        self.out["failures"].append({"run": what, "error": " ".join(msg[:3])[:600]})
        log(f"FAILED {what}: {' '.join(msg[:3])[:600]}")

    def counts(self) -> tuple[float, dict[str, float]]:
        per = {}
        for c in self.contenders:
            v = c.vault_requests()
            if v is not None:
                per[c.name] = v
        return self.bao.handled_requests(), per

    def run_burst(self) -> None:
        a = self.args
        files = {}
        for c in self.contenders:
            if c.kind not in ("trousseau", "peer"):
                continue
            if self.over_budget(f"burst {c.name}"):
                continue
            bf = os.path.join(self.dir, f"burst-{c.name.replace(':', '-')}.jsonl")
            r = subprocess.run([a.bench_bin, "plugin", "--socket", c.socket, "--op", "burst-prepare",
                                "--seeds", str(a.burst_seeds), "--concurrency", "32",
                                "--burst-file", bf, "--json"], capture_output=True, text=True,
                               timeout=300)
            if r.returncode != 0:
                self.fail(f"burst-prepare {c.name}", RuntimeError(r.stdout + r.stderr))
                continue
            files[c.name] = bf
        # The same seeds in every pass: nothing is cached between bursts (coalescing joins only
        # calls in flight at once), so each pass is the same cold start.
        ready = [c for c in self.contenders if c.name in files]
        got: dict[str, list] = {}
        for p in range(a.passes):
            order = rotated(ready, p)
            for c in order:
                if self.over_budget(f"burst {c.name} pass {p + 1}"):
                    continue
                time.sleep(0.5)
                bao0, per0 = self.counts()
                cpu0, bcpu0 = cpu_seconds(c.pid), cpu_seconds(self.bao.proc.pid)
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run([a.bench_bin, "plugin", "--socket", c.socket, "--op", "burst",
                                    "--dups", str(a.burst_dups), "--concurrency", str(a.burst_c),
                                    "--burst-file", files[c.name], "--json"], capture_output=True,
                                   text=True, timeout=300)
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu1, bcpu1 = cpu_seconds(c.pid), cpu_seconds(self.bao.proc.pid)
                bao1, per1 = self.counts()
                if r.returncode != 0 or not r.stdout.strip():
                    self.fail(f"burst {c.name} pass {p + 1}", RuntimeError(r.stdout + r.stderr))
                    continue
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res["contender"] = c.name
                res["seeds"] = a.burst_seeds
                res["dups"] = a.burst_dups
                res["bao_requests"] = bao1 - bao0 - self.scrape_cost
                res["plugin_vault_requests"] = (per1[c.name] - per0[c.name]) if c.name in per1 else None
                res["pass"] = p + 1
                # CPU per decrypt of the plugin, OpenBao and the load client over the burst: with
                # the wall time on 2 CPUs, whether the burst was bound by CPU or by waiting.
                calls = max(res.get("ok", 0), 1)
                res["plugin_cpu_us_per_call"] = (cpu1 - cpu0) * 1e6 / calls
                res["bao_cpu_us_per_call"] = (bcpu1 - bcpu0) * 1e6 / calls
                res["client_cpu_us_per_call"] = ((ru1.ru_utime + ru1.ru_stime)
                                                 - (ru0.ru_utime + ru0.ru_stime)) * 1e6 / calls
                got.setdefault(c.name, []).append(res)
                log(f"burst {c.name:<20} {a.burst_seeds}x{a.burst_dups} at c={a.burst_c}: "
                    f"{res['wall_s']:.2f} s, CPU per decrypt: plugin {res['plugin_cpu_us_per_call']:.0f} "
                    f"us, OpenBao {res['bao_cpu_us_per_call']:.0f} us, client "
                    f"{res['client_cpu_us_per_call']:.0f} us; OpenBao handled {res['bao_requests']:.0f} requests"
                    + (f", plugin counted {res['plugin_vault_requests']:.0f}"
                       if res["plugin_vault_requests"] is not None else "")
                    + (f"  (pass {p + 1}/{a.passes})" if a.passes > 1 else ""))
        for c in ready:
            if got.get(c.name):
                self.out["burst"].append(merge_passes(got[c.name]))

    def run_idle(self) -> None:
        s = self.args.idle_s
        # bench/run kills the harness after BENCH_TIMEOUT_S: shorten the window to end before it.
        left = self.t0 + float(os.environ.get("BENCH_TIMEOUT_S", "1200")) - 40 - time.monotonic()
        if left < s:
            self.out["skipped"].append(f"idle window shortened from {s:.0f} s to {max(left, 0):.0f} s")
            s = left
        if s < 1:
            return
        log(f"idle window: {s:.0f} s with no load")
        bao0, per0 = self.counts()
        time.sleep(s)
        bao1, per1 = self.counts()
        total = bao1 - bao0 - self.scrape_cost
        idle = {"window_s": s, "openbao_requests": total, "per_plugin": {}}
        tro = 0.0
        for name, v in per1.items():
            d = v - per0.get(name, 0.0)
            tro += d
            idle["per_plugin"][name] = {"requests": d, "per_hour": d * 3600.0 / s,
                                        "source": "plugin /metrics trousseau_vault_requests_total"}
        peer = [c for c in self.contenders if c.kind == "peer"]
        if peer:
            d = max(total - tro, 0.0)
            idle["per_plugin"]["go-peer"] = {
                "requests": d, "per_hour": d * 3600.0 / s,
                "source": "OpenBao vault_core_handle_request_count minus the Trousseau plugins' "
                          "own counts (the peer has no request counter)"}
        self.out["idle"] = idle
        for name, v in idle["per_plugin"].items():
            log(f"idle {name:<20} {v['requests']:.0f} Vault requests in {s:.0f} s "
                f"= {v['per_hour']:.0f}/hour")

    # ------------------------------------------------------------------ teardown
    def stop(self) -> None:
        for c in self.contenders:
            c.stop()
        if self.bao is not None:
            self.bao.stop()
        if self.args.keep:
            log(f"work dir kept: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin-bin", default=os.path.join(REPO, "build", "release", "src", "trousseau"))
    ap.add_argument("--bench-bin",
                    default=os.path.join(REPO, "build", "release", "bench", "trousseau-bench"))
    ap.add_argument("--null-bin",
                    default=os.path.join(REPO, "build", "release", "bench", "trousseau-null-server"))
    ap.add_argument("--peer-bin", default=os.environ.get("BENCH_PEER_BIN", ""),
                    help="the Go peer's binary (env BENCH_PEER_BIN); default: cached build, or "
                         "build it from the fetched snapshot")
    ap.add_argument("--extra-plugin", action="append", default=[], metavar="NAME=PATH",
                    help="another Trousseau binary as a contender (repeatable)")
    ap.add_argument("--only", type=lambda v: [x for x in v.split(",") if x], metavar="A,B,...",
                    help="run only these contenders (floor, trousseau, trousseau+coalesce, go-peer, "
                         "null, echo, extra:NAME, extra:NAME+coalesce: an --extra-plugin with "
                         "coalescing/batching on), for quick A/B runs")
    ap.add_argument("--no-build", action="store_true", help="never build the Go peer")
    ap.add_argument("--build-peer-only", action="store_true",
                    help="build (or find) the Go peer, print where or why not, and exit (bench/run "
                         "does this before entering its network namespace, which has no network)")
    ap.add_argument("--smoke", action="store_true",
                    help="every contender briefly (c=1,16, few calls, small burst, 2 s idle)")
    ap.add_argument("--concurrency", type=int, nargs="+")
    ap.add_argument("--n1", type=int, help="round trips per run at c=1 (env BENCH_N1, default 1000)")
    ap.add_argument("--n", type=int, help="round trips per run at c>1 (env BENCH_N, default 3000)")
    ap.add_argument("--passes", type=int,
                    help="measure every load run, Status run and burst this many times, the "
                         "contenders interleaved and their order rotated each pass; the tables "
                         "show medians, the targets each pass's verdict (env BENCH_PASSES, "
                         "default 3; smoke 1)")
    ap.add_argument("--burst-seeds", type=int)
    ap.add_argument("--burst-dups", type=int)
    ap.add_argument("--burst-c", type=int)
    ap.add_argument("--idle-s", type=float, help="idle window in s (env BENCH_IDLE_S, default 60)")
    ap.add_argument("--batch-max-wait", default=PERF_ON["batch_max_wait"],
                    help="performance.batch_max_wait of the trousseau+coalesce contender "
                         "(default %(default)s, the plugin's default)")
    ap.add_argument("--extra-perf", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="one more `performance:` setting for the --extra-plugin NAME contenders "
                         "(both twins), e.g. kept256:max_idle_threads=256, to A/B one binary "
                         "under two settings; an integer VALUE is written as one; repeatable")
    ap.add_argument("--status-pace-us", type=int, default=5000,
                    help="Status prober: one call every this many µs (default 5000)")
    ap.add_argument("--status-prober", choices=("rt", "normal", "both"), default="rt",
                    help="how the Status prober is scheduled: rt = SCHED_FIFO priority 10 (its "
                         "own wake-up delay left out: it stands for kube-apiserver, whose "
                         "scheduling is not the plugin's), normal = like the load, both = one "
                         "run of each (default rt)")
    ap.add_argument("--thread-sched", action="append", default=[], metavar="NAME=POLICY[@THREADS]",
                    help="experiments: after start, set a contender's threads' scheduling from "
                         "outside (fifo:P, rr:P, other, nice:N; THREADS a thread name, default "
                         "kms-status, * or !PREFIX); repeatable")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET_S", "900")),
                    help="stop starting load runs after this many s (env BENCH_BUDGET_S)")
    ap.add_argument("--json-out", help="write every number here as JSON")
    ap.add_argument("--report", help="also write this Markdown report (and a PNG plot beside it)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    ap.add_argument("--smaps-dir", help="save each plugin's /proc/<pid>/smaps and status here at "
                                        "idle, right after the last run and 2 s later (RSS "
                                        "breakdown; adds rss_kib.*.after_2s to the JSON)")
    args = ap.parse_args()
    PERF_ON["batch_max_wait"] = args.batch_max_wait
    if args.build_peer_only:
        peer, note = resolve_peer(args)
        log(f"go-peer: {note}" if peer else f"go-peer: MISSING: {note}")
        return 0
    env = os.environ.get
    smoke = args.smoke
    args.concurrency = args.concurrency or ([1, 16] if smoke else [1, 16, 64, 256])
    args.n1 = args.n1 or (60 if smoke else int(env("BENCH_N1", "1000")))
    args.n = args.n or (200 if smoke else int(env("BENCH_N", "3000")))
    if args.passes is None:
        args.passes = 1 if smoke else int(env("BENCH_PASSES", "3"))
    if args.passes < 1:
        ap.error("--passes must be at least 1")
    args.burst_seeds = args.burst_seeds or (30 if smoke else int(env("BENCH_BURST_SEEDS", "1000")))
    args.burst_dups = args.burst_dups or (3 if smoke else int(env("BENCH_BURST_DUPS", "10")))
    args.burst_c = args.burst_c or (16 if smoke else int(env("BENCH_BURST_C", "256")))
    if args.idle_s is None:
        args.idle_s = 2.0 if smoke else float(env("BENCH_IDLE_S", "60"))
    extras = []
    for spec in args.extra_plugin:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--extra-plugin wants NAME=PATH, got {spec!r}")
        extras.append((name, os.path.abspath(path)))
    args.extra_plugin = extras
    perf_ov: dict[str, dict] = {}
    for spec in args.extra_perf:
        name, sep, kv = spec.partition(":")
        key, sep2, value = kv.partition("=")
        if not sep or not sep2 or not name or not key or not value:
            ap.error(f"--extra-perf wants NAME:KEY=VALUE, got {spec!r}")
        if name not in {n for n, _ in extras}:
            ap.error(f"--extra-perf {spec!r}: no --extra-plugin named {name!r}")
        perf_ov.setdefault(name, {})[key] = int(value) if value.isdigit() else value
    args.extra_perf = perf_ov
    args.plugin_bin = os.path.abspath(args.plugin_bin)
    args.bench_bin = os.path.abspath(args.bench_bin)
    args.null_bin = os.path.abspath(args.null_bin) if os.path.isfile(args.null_bin) else ""
    for b in [args.plugin_bin, args.bench_bin] + [p for _, p in extras]:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            print(f"harness: {b} is not built (run bench/run)", file=sys.stderr)
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    b = Bench(args)
    b.out["machine"] = {
        "cpus": os.cpu_count(), "loadavg_before": open("/proc/loadavg").read().split()[:3],
        "kernel": platform.release(), "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "netns": os.environ.get("BENCH_NETNS", "shared"),
    }
    b.out["settings"] = {k: getattr(args, k) for k in (
        "smoke", "concurrency", "n1", "n", "passes", "burst_seeds", "burst_dups", "burst_c", "idle_s",
        "status_pace_us", "status_prober", "plugin_bin")}
    try:
        v = subprocess.run([args.plugin_bin, "version"], capture_output=True, text=True, timeout=10)
        b.out["plugin_version"] = v.stdout.strip().splitlines()[:3]
    except Exception:  # noqa: BLE001
        pass
    rc = 0
    try:
        b.start()
        b.run_all()
        b.run_burst()
        b.run_idle()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping")
        rc = 130
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {e}")
        for c in b.contenders:
            if c.plugin is not None:
                sys.stderr.write(f"--- {c.name}:\n{c.plugin.output_text(3000)}\n")
        rc = 1
    finally:
        b.out["machine"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        b.stop()
    if rc == 0 and b.out["failures"]:
        rc = 1
    b.out["complete"] = rc == 0
    print(bench_report.text(b.out))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(b.out, f, indent=2)
    if args.report and rc in (0, 1) and b.out["runs"]:  # not when interrupted
        bench_report.write_markdown(b.out, args.report)
        log(f"wrote {args.report}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
