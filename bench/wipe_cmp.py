#!/usr/bin/env python3
"""Plugin vs. direct OpenBao, measured in the same run, on loopback.

Starts a real OpenBao (TLS listener that requires and verifies a client certificate, transit key
`kubernetes`, a token with only the plugin's policy) and the real `trousseau serve`, both through
the integration-test library (tests/integration/itlib), then runs `trousseau-bench` for each
concurrency: plugin status (the gRPC hop alone), plugin encrypt, vault encrypt, plugin decrypt,
vault decrypt. The `vault` runs use the
same CA, client certificate/key and token file as the plugin. Samples the plugin's VmRSS/VmHWM
from /proc/<pid>/status when idle (after start) and after the loaded runs, and the CPU time the
plugin and OpenBao spend per call. Prints a side-by-side table; stops everything.

Unless --no-wipe-cmp: a second plugin runs beside the first (same OpenBao, same token, its own
socket) with `hygiene.wipe_freed_memory: false`, and for each concurrency plugin encrypt and
decrypt are measured against both, in rounds that alternate A (wipe on), B (wipe off), A, B...
so that drift on a shared machine lands on both. Each round writes every call's latency, and the
percentiles are taken over all rounds of a plugin together. Prints the cost table and both RSS.

Run through `bench/run --wipe-cmp` (which builds first); this file only needs the two binaries:
    .venv/bin/python bench/wipe_cmp.py --plugin-bin build/release/src/trousseau \\
        --bench-bin build/release/bench/trousseau-bench
A benchmark measures: nothing here decides whether a number is good.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from itlib import stubs  # noqa: E402
from itlib.plugin import DELETE, Plugin, merge  # noqa: E402

# Plugin startup and the /proc samplers are harness.py's.
from harness import (cpu_seconds, log, make_run_dir, new_openbao, plugin_config,  # noqa: E402
                     proc_status, tcp_active_opens)
from harness import start_plugin as spawn_and_wait  # noqa: E402

BUDGET_S = 150.0          # stop starting new runs after this (main table); bench/run kills at 230 s
CMP_BUDGET_S = 205.0      # stop starting new wipe-on/off rounds after this


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def percentile_us(sorted_ns: list[int], p: float) -> float:
    """Nearest rank, as trousseau-bench computes it, in µs."""
    if not sorted_ns:
        return 0.0
    rank = min(max(math.ceil(p / 100.0 * len(sorted_ns)), 1), len(sorted_ns))
    return sorted_ns[rank - 1] / 1000.0


def wipe_on_free_linked(binary: str) -> bool | None:
    """Whether the executable interposes free() (hardening/wipe_on_free.cpp is linked in only
    without sanitizers). None when nm is not available."""
    if shutil.which("nm") is None:
        return None
    r = subprocess.run(["nm", "-D", "--defined-only", binary], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return any(line.split()[-1:] == ["free"] for line in r.stdout.splitlines())


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="trousseau-bench-")
        os.chmod(self.dir, 0o755)
        self.bao: OpenBao | None = None
        self.plugin: Plugin | None = None
        self.plugin_off: Plugin | None = None   # hygiene.wipe_freed_memory: false (the comparison)
        self.results: list[dict] = []
        self.cmp_rounds: list[dict] = []        # one per (plugin, op, c, round)
        self.cmp: dict[tuple[str, int], dict[str, dict]] = {}  # (op, c) -> {"on"|"off": merged}
        self.rss: dict[str, dict[str, int]] = {}
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ setup
    def start(self) -> None:
        run = os.path.join(self.dir, "run")
        make_run_dir(run)
        self.bao = new_openbao(self.dir)
        self.bao.setup()
        log(f"OpenBao ready at {self.bao.addr} (mTLS) in {self.bao.timings.get('ready', 0):.1f} s")
        v2, v1 = stubs.generate(os.path.join(self.dir, "stubs"))
        # harness.py's config with production-like refresh period and timeouts, and no `limits:`
        # (this comparison runs at most c=16).
        cfg = merge(plugin_config(self.bao, os.path.join(run, "kms.sock")), {
            "vault": {"timeouts": {"connect": "2s", "request": "5s"}},
            "status": {"refresh_period": "15s", "stale_after": "45s"},
            "limits": DELETE,
        })
        self.start_plugin("plugin", "plugin", cfg, v2, v1)
        if self.args.wipe_cmp:
            # Same OpenBao, same token file, same everything but the hygiene switch and the socket.
            off = merge(cfg, {"socket": {"path": os.path.join(run, "kms-nowipe.sock")},
                              "hygiene": {"wipe_freed_memory": False}})
            self.start_plugin("plugin_off", "plugin-nowipe", off, v2, v1)

    def start_plugin(self, attr: str, name: str, cfg: dict, v2, v1) -> None:
        p = Plugin(self.args.plugin_bin, self.dir, name, cfg, v2, v1)
        setattr(self, attr, p)  # before spawning: stop() must find it if it fails to come up
        spawn_and_wait(p)
        hyg = cfg.get("hygiene", {}).get("wipe_freed_memory", True)
        log(f"{name} pid {p.proc.pid} serving on {p.socket_path} "
            f"(hygiene.wipe_freed_memory: {str(hyg).lower()})")

    # ------------------------------------------------------------------ runs
    def bench_cmd(self, mode: str, op: str, n: int, c: int, plugin: Plugin | None = None,
                  warmup: int | None = None) -> list[str]:
        if warmup is None:
            warmup = max(20, 200 // c)
        cmd = [self.args.bench_bin, mode, "--n", str(n), "--concurrency", str(c), "--op", op,
               "--warmup", str(warmup), "--json"]
        if mode == "plugin":
            cmd += ["--socket", (plugin or self.plugin).socket_path]
        else:
            p = self.bao.pki
            cmd += ["--addr", self.bao.addr, "--ca", p.ca_file, "--cert", p.client_cert_file,
                    "--key", p.client_key_file, "--token-file", self.bao.token_file,
                    "--mount", self.bao.mount, "--key-name", self.bao.key]
        return cmd

    def run_one(self, mode: str, op: str, n: int, c: int) -> dict | None:
        if time.monotonic() - self.t0 > BUDGET_S:
            self.skipped.append(f"{mode} {op} c={c}")
            return None
        ppid, bpid = self.plugin.proc.pid, self.bao.proc.pid
        cpu_p0, cpu_b0, opens0 = cpu_seconds(ppid), cpu_seconds(bpid), tcp_active_opens()
        r = subprocess.run(self.bench_cmd(mode, op, n, c), capture_output=True, text=True,
                           timeout=60)
        cpu_p1, cpu_b1, opens1 = cpu_seconds(ppid), cpu_seconds(bpid), tcp_active_opens()
        if r.returncode != 0 or not r.stdout.strip():
            raise RuntimeError(f"trousseau-bench {mode} {op} c={c} failed (exit {r.returncode}):\n"
                               f"{r.stdout}{r.stderr}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        # CPU per measured call; the warm-up calls are included in the delta, so divide by them too.
        calls = res["ok"] + res["warmup_per_thread"] * res["concurrency"]
        res["plugin_cpu_us_per_call"] = (cpu_p1 - cpu_p0) * 1e6 / calls if mode == "plugin" else 0.0
        res["bao_cpu_us_per_call"] = (cpu_b1 - cpu_b0) * 1e6 / calls
        res["tcp_connects"] = opens1 - opens0
        if mode == "plugin":
            res["plugin_status_after"] = proc_status(ppid)
        self.results.append(res)
        log(f"{mode:6} {op:7} c={c:<2} n={n:<5} p50 {res['p50_us']:8.1f} us  "
            f"p90 {res['p90_us']:8.1f} us  p99 {res['p99_us']:8.1f} us  "
            f"{res['throughput_per_s']:8.1f}/s  ({res['transport']})")
        return res

    def run_all(self) -> None:
        time.sleep(1.0)  # let the startup settle before the idle sample
        self.rss["idle"] = proc_status(self.plugin.proc.pid)
        if self.plugin_off is not None:
            self.rss["off_idle"] = proc_status(self.plugin_off.proc.pid)
        for c in self.args.concurrency:
            n = self.args.n1 if c == 1 else self.args.n
            self.run_one("plugin", "status", n, c)   # the gRPC hop alone: Status never calls Vault
            for op in ("encrypt", "decrypt"):
                for mode in ("plugin", "vault"):
                    self.run_one(mode, op, n, c)
        self.rss["loaded"] = proc_status(self.plugin.proc.pid)
        if self.plugin_off is not None:
            self.run_wipe_cmp()
            self.rss["on_after_cmp"] = proc_status(self.plugin.proc.pid)
            self.rss["off_after_cmp"] = proc_status(self.plugin_off.proc.pid)

    # ------------------------------------------------------------------ wipe on vs. off
    def cmp_chunk(self, which: str, plugin: Plugin, op: str, n: int, c: int, rnd: int) -> dict:
        """One round against one plugin: trousseau-bench writes each call's latency to a file."""
        lat_file = os.path.join(self.dir, f"lat-{which}-{op}-c{c}-r{rnd}.txt")
        warmup = max(5, 50 // c)  # the plugin's connections to OpenBao are warm already
        cmd = self.bench_cmd("plugin", op, n, c, plugin, warmup) + ["--latencies-out", lat_file]
        pid = plugin.proc.pid
        cpu0 = cpu_seconds(pid)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        cpu1 = cpu_seconds(pid)
        if r.returncode != 0 or not r.stdout.strip():
            raise RuntimeError(f"trousseau-bench plugin {op} c={c} against {plugin.name} failed "
                               f"(exit {r.returncode}):\n{r.stdout}{r.stderr}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        with open(lat_file) as f:
            res["latencies_ns"] = [int(x) for x in f.read().split()]
        os.unlink(lat_file)
        if len(res["latencies_ns"]) != res["ok"]:
            raise RuntimeError(f"{lat_file}: {len(res['latencies_ns'])} latencies for {res['ok']} calls")
        res["wipe"] = which
        res["round"] = rnd
        res["calls_incl_warmup"] = res["ok"] + res["warmup_per_thread"] * res["concurrency"]
        res["plugin_cpu_s"] = cpu1 - cpu0
        return res

    def run_wipe_cmp(self) -> None:
        rounds = self.args.cmp_rounds
        plugins = (("on", self.plugin), ("off", self.plugin_off))
        for c in self.args.concurrency:
            total = self.args.cmp_n1 if c == 1 else self.args.cmp_n
            per_round = max(c, total // rounds)
            for op in ("encrypt", "decrypt"):
                chunks: dict[str, list[dict]] = {"on": [], "off": []}
                for rnd in range(rounds):
                    # Whole rounds only, so that both plugins always have the same number of calls.
                    if time.monotonic() - self.t0 > CMP_BUDGET_S:
                        self.skipped.append(f"wipe-cmp {op} c={c} rounds {rnd + 1}-{rounds}")
                        break
                    for which, plugin in plugins:  # A, B, A, B...
                        chunks[which].append(self.cmp_chunk(which, plugin, op, per_round, c, rnd))
                if not chunks["on"]:
                    continue
                merged = {}
                for which, _ in plugins:
                    lat = sorted(x for ch in chunks[which] for x in ch["latencies_ns"])
                    wall = sum(ch["wall_s"] for ch in chunks[which])
                    calls = sum(ch["calls_incl_warmup"] for ch in chunks[which])
                    merged[which] = {
                        "op": op, "concurrency": c, "rounds": len(chunks[which]), "ok": len(lat),
                        "p50_us": percentile_us(lat, 50), "p90_us": percentile_us(lat, 90),
                        "p99_us": percentile_us(lat, 99),
                        "mean_us": sum(lat) / len(lat) / 1000.0,
                        "throughput_per_s": len(lat) / wall if wall > 0 else 0.0,
                        "plugin_cpu_us_per_call":
                            sum(ch["plugin_cpu_s"] for ch in chunks[which]) * 1e6 / calls,
                        "round_p50_us": [ch["p50_us"] for ch in chunks[which]],
                    }
                    for ch in chunks[which]:
                        del ch["latencies_ns"]
                        self.cmp_rounds.append(ch)
                self.cmp[(op, c)] = merged
                on, off = merged["on"], merged["off"]
                log(f"wipe   {op:7} c={c:<2} {on['rounds']}x{per_round:<5} p50 on {on['p50_us']:8.1f} us"
                    f" off {off['p50_us']:8.1f} us   p99 on {on['p99_us']:8.1f} us off {off['p99_us']:8.1f} us")

    # ------------------------------------------------------------------ teardown
    def stop(self) -> None:
        for plugin in (self.plugin, self.plugin_off):
            if plugin is None or plugin.proc is None:
                continue
            try:
                rc = plugin.terminate(10.0)
                if rc != 0:
                    log(f"{plugin.name} exited with {rc} on SIGTERM; its stderr tail:\n"
                        f"{plugin.stderr_text()[-2000:]}")
            except Exception as e:  # noqa: BLE001 - report and keep stopping
                log(f"{plugin.name} did not stop cleanly: {e}")
                plugin.kill()
        if self.bao is not None:
            self.bao.stop()
        if self.args.keep:
            log(f"work dir kept: {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ report
    def find(self, mode: str, op: str, c: int) -> dict | None:
        for r in self.results:
            if r["mode"] == mode and r["op"] == op and r["concurrency"] == c:
                return r
        return None

    def report(self) -> str:
        def us(v):
            return f"{v:,.0f} µs" if v is not None else "-"

        def per_s(v):
            return f"{v:,.0f}" if v is not None else "-"

        lines = []
        hdr = (f"{'op':<8}{'c':>3}  {'plugin p50':>11} {'vault p50':>11} {'overhead':>16}"
               f"  {'plugin p90':>11} {'vault p90':>11}  {'plugin p99':>11} {'vault p99':>11}"
               f"  {'plugin/s':>9} {'vault/s':>9}")
        lines.append(hdr)
        for c in self.args.concurrency:
            for op in ("encrypt", "decrypt"):
                p, v = self.find("plugin", op, c), self.find("vault", op, c)
                if p is None or v is None:
                    lines.append(f"{op:<8}{c:>3}  (not run: time budget)")
                    continue
                d = p["p50_us"] - v["p50_us"]
                pct = 100.0 * d / v["p50_us"] if v["p50_us"] else 0.0
                over = f"{d:+,.0f} µs {pct:+.0f}%"
                lines.append(
                    f"{op:<8}{c:>3}  {us(p['p50_us']):>11} {us(v['p50_us']):>11} {over:>16}"
                    f"  {us(p['p90_us']):>11} {us(v['p90_us']):>11}"
                    f"  {us(p['p99_us']):>11} {us(v['p99_us']):>11}"
                    f"  {per_s(p['throughput_per_s']):>9} {per_s(v['throughput_per_s']):>9}")
        floor = [(c, self.find("plugin", "status", c)) for c in self.args.concurrency]
        floor = [f"c={c} p50 {r['p50_us']:,.0f} µs, p99 {r['p99_us']:,.0f} µs, "
                 f"{r['throughput_per_s']:,.0f}/s, plugin CPU {r['plugin_cpu_us_per_call']:,.0f} µs/call"
                 for c, r in floor if r is not None]
        if floor:
            lines.append("")
            lines.append("gRPC hop alone (plugin Status, never calls Vault): " + "; ".join(floor))
        lines.append("")
        netns = os.environ.get("BENCH_NETNS", "shared")
        lines.append("CPU per call (/proc/<pid>/stat, 10 ms ticks) and new TCP connections to OpenBao "
                     "(/proc/net/snmp ActiveOpens, warm-up included"
                     + ("" if netns == "own" else "; SHARED network namespace: other traffic counts")
                     + "):")
        for c in self.args.concurrency:
            for op in ("encrypt", "decrypt"):
                p, v = self.find("plugin", op, c), self.find("vault", op, c)
                if p is None or v is None:
                    continue
                lines.append(f"  {op:<8}c={c:<3} plugin {p['plugin_cpu_us_per_call']:6.0f} µs"
                             f"   OpenBao via plugin {p['bao_cpu_us_per_call']:6.0f} µs"
                             f"   OpenBao direct {v['bao_cpu_us_per_call']:6.0f} µs"
                             f"   connects: via plugin {p['tcp_connects']:>5}, direct {v['tcp_connects']:>3}")
        lines.append("")
        idle, loaded = self.rss.get("idle"), self.rss.get("loaded")
        if idle:
            lines.append(f"plugin RSS idle   (1 s after start):    VmRSS {mib(idle['VmRSS']):>10}"
                         f"   VmHWM {mib(idle['VmHWM']):>10}   threads {idle.get('Threads', '?')}")
        if loaded:
            lines.append(f"plugin RSS loaded (after all runs):     VmRSS {mib(loaded['VmRSS']):>10}"
                         f"   VmHWM {mib(loaded['VmHWM']):>10}   threads {loaded.get('Threads', '?')}")
        peak_rss = max((r["plugin_status_after"]["VmRSS"] for r in self.results
                        if "plugin_status_after" in r), default=None)
        if peak_rss is not None:
            lines.append(f"plugin VmRSS right after a loaded run, highest seen: {mib(peak_rss)}")
        transports = sorted({r["transport"] for r in self.results if r["mode"] == "vault"})
        lines.append("")
        lines.append(f"plaintext 32 bytes; plugin: KMS v2 gRPC over a Unix socket, one channel shared "
                     f"by all threads; vault: libcurl {'/'.join(transports) or '?'} over mutual TLS, "
                     f"one kept-alive connection per thread; same CA, client cert and token.")
        if self.args.wipe_cmp:
            lines.append("")
            lines.extend(self.report_wipe_cmp())
        if self.skipped:
            lines.append(f"skipped (over the time budget): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def report_wipe_cmp(self) -> list[str]:
        def us(v):
            return f"{v:,.0f} µs"

        lines = [f"Cost of hygiene.wipe_freed_memory (wipe every freed heap block), same run: plugin A "
                 f"wipe-on (default) vs. plugin B wipe-off, same OpenBao and token, "
                 f"{self.args.cmp_rounds} rounds A,B,A,B..., percentiles over all rounds; "
                 f"cost = on p50 - off p50 (% of off)"]
        if wipe_on_free_linked(self.args.plugin_bin) is False:
            lines.append("WARNING: this plugin binary does not interpose free() (sanitizer build?): "
                         "the switch does nothing, both columns measure the same code")
        lines.append(f"{'op':<8}{'c':>3}  {'wipe-on p50':>11} {'wipe-off p50':>12} {'cost(µs, %)':>15}"
                     f"  {'wipe-on p99':>11} {'wipe-off p99':>12}  {'on/s':>7} {'off/s':>7}"
                     f"  {'CPU/call on':>11} {'off':>7}  calls each")
        for c in self.args.concurrency:
            for op in ("encrypt", "decrypt"):
                m = self.cmp.get((op, c))
                if m is None:
                    lines.append(f"{op:<8}{c:>3}  (not run: time budget)")
                    continue
                on, off = m["on"], m["off"]
                d = on["p50_us"] - off["p50_us"]
                pct = 100.0 * d / off["p50_us"] if off["p50_us"] else 0.0
                cost = f"{d:+,.0f} µs {pct:+.1f}%"
                lines.append(
                    f"{op:<8}{c:>3}  {us(on['p50_us']):>11} {us(off['p50_us']):>12} {cost:>15}"
                    f"  {us(on['p99_us']):>11} {us(off['p99_us']):>12}"
                    f"  {on['throughput_per_s']:>7,.0f} {off['throughput_per_s']:>7,.0f}"
                    f"  {us(on['plugin_cpu_us_per_call']):>11} {us(off['plugin_cpu_us_per_call']):>7}"
                    f"  {on['ok']:,}")
        lines.append("  (CPU/call: the measured plugin's utime+stime over its rounds ÷ calls, warm-up "
                     "included, 10 ms ticks)")
        for label, key_idle, key_after, note in (
                ("A wipe-on ", "idle", "on_after_cmp", "also served the main table's runs"),
                ("B wipe-off", "off_idle", "off_after_cmp", "comparison rounds only")):
            idle, after = self.rss.get(key_idle), self.rss.get(key_after)
            if not idle:
                continue
            line = f"plugin {label} RSS idle VmRSS {mib(idle['VmRSS']):>10}"
            if after:
                line += (f"   after comparison VmRSS {mib(after['VmRSS']):>10}"
                         f"   VmHWM {mib(after['VmHWM']):>10}   threads {after.get('Threads', '?')}")
            lines.append(line + f"   ({note})")
        return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin-bin", default=os.path.join(REPO, "build", "release", "src", "trousseau"))
    ap.add_argument("--bench-bin",
                    default=os.path.join(REPO, "build", "release", "bench", "trousseau-bench"))
    ap.add_argument("--n1", type=int, default=int(os.environ.get("BENCH_N1", "3000")),
                    help="measured calls per run at c=1 (env BENCH_N1)")
    ap.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "8000")),
                    help="measured calls per run at c>1 (env BENCH_N)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--no-wipe-cmp", dest="wipe_cmp", action="store_false",
                    help="skip the second plugin (hygiene.wipe_freed_memory: false) and its table")
    ap.add_argument("--cmp-n1", type=int, default=int(os.environ.get("BENCH_CMP_N1", "3600")),
                    help="wipe on/off: measured calls per plugin per op at c=1, over all rounds "
                         "(env BENCH_CMP_N1)")
    ap.add_argument("--cmp-n", type=int, default=int(os.environ.get("BENCH_CMP_N", "7200")),
                    help="wipe on/off: the same at c>1 (env BENCH_CMP_N)")
    ap.add_argument("--cmp-rounds", type=int, default=int(os.environ.get("BENCH_CMP_ROUNDS", "6")),
                    help="wipe on/off: rounds A,B per op and concurrency (env BENCH_CMP_ROUNDS)")
    ap.add_argument("--json-out", help="also write every run's numbers here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config)")
    args = ap.parse_args()
    # the plugin runs with its work dir as cwd: relative paths would point elsewhere
    args.plugin_bin = os.path.abspath(args.plugin_bin)
    args.bench_bin = os.path.abspath(args.bench_bin)
    if args.cmp_rounds < 1:
        ap.error("--cmp-rounds must be at least 1")
    for b in (args.plugin_bin, args.bench_bin):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            print(f"harness: {b} is not built (run bench/run)", file=sys.stderr)
            return 2

    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C so that the finally below stops everything.
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    b = Bench(args)
    try:
        b.start()
        b.run_all()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping")
        b.stop()
        return 130
    except Exception:
        for p in (b.plugin, b.plugin_off):
            if p is not None:
                sys.stderr.write(f"--- {p.name}:\n{p.output_text(4000)}\n")
        b.stop()
        raise
    b.stop()
    print(b.report())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"runs": b.results, "rss_kib": b.rss,
                       "wipe_cmp": [{"op": op, "concurrency": c, **m}
                                    for (op, c), m in b.cmp.items()],
                       "wipe_cmp_rounds": b.cmp_rounds}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
