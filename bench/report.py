#!/usr/bin/env python3
"""Tables, targets and the plot from one bench run's JSON (bench/harness.py writes it).

    bench/report.py --from-json run.json --report docs/benchmarks.md   # re-render, no new run

The PNG goes beside the Markdown file (same name, .png). Needs matplotlib for the plot
(bench/requirements.txt); without it the Markdown says the plot was not drawn.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

PLOTTED = ("floor", "trousseau", "trousseau+coalesce", "go-peer")


def _runs(out, name):
    return {r["concurrency"]: r for r in out["runs"] if r["contender"] == name}


def _names(out):
    seen = []
    for r in out["runs"]:
        if r["contender"] not in seen:
            seen.append(r["contender"])
    return seen


def _f(v, fmt="{:,.0f}"):
    return "–" if v is None else fmt.format(v)


def _mib(kib):
    return "–" if kib is None else f"{kib / 1024:.1f}"


def _prober_mode(r) -> str:
    # Runs recorded before the prober could be real-time had it under the normal scheduler.
    return r.get("status_prober", "normal")


def _status(out) -> dict:
    """(contender, c) -> the Status prober's numbers; the real-time prober's when a run has both."""
    status = {}
    for r in sorted(out.get("status_under_load", []), key=lambda r: _prober_mode(r) == "rt"):
        status[(r["contender"], r["concurrency"])] = r["status"]
    return status


def prober_desc(out) -> str:
    """How the Status prober was scheduled: it stands for kube-apiserver's health check, whose
    own wake-up delay is not the plugin's."""
    modes = {_prober_mode(r) for r in out.get("status_under_load", [])}
    if modes == {"rt"}:
        return ("the Status prober ran under SCHED_FIFO (priority 10), so its own wake-up delay "
                "on the loaded CPUs is left out: it stands for kube-apiserver, whose scheduling is "
                "not the plugin's")
    if modes == {"normal"}:
        return ("the Status prober ran under the normal scheduler beside the load, so its p99 "
                "includes the prober's own wake-up delay on the loaded CPUs")
    if modes == {"rt", "normal"}:
        return ("the Status prober ran twice, under SCHED_FIFO (priority 10: its own wake-up "
                "delay left out; the table shows this one) and under the normal scheduler")
    return "no Status prober ran"


def status_rows(out) -> list[list[str]]:
    """Every Status-under-load run, with how its prober was scheduled."""
    return [[r["contender"], str(r["concurrency"]),
             "SCHED_FIFO" if _prober_mode(r) == "rt" else "normal",
             _f(r["status"]["p50_us"]), _f(r["status"]["p99_us"]), _f(r["status"]["max_us"]),
             str(r["status"]["ok"])] for r in out.get("status_under_load", [])]


STATUS_HDR = ["contender", "c", "prober scheduled", "Status p50 µs", "p99 µs", "max µs", "calls"]


def main_table(out) -> list[list[str]]:
    rows = []
    status = _status(out)
    for conc in out["settings"]["concurrency"]:
        for name in _names(out):
            r = _runs(out, name).get(conc)
            if r is None:
                continue
            s = status.get((name, conc))
            rows.append([name, str(conc), _f(r["p50_us"]), _f(r["p99_us"]),
                         _f(r["throughput_per_s"]), _f(r["plugin_cpu_us_per_call"]),
                         _f(r["bao_cpu_us_per_call"]), _f(r.get("client_cpu_us_per_call")),
                         _f(r.get("tcp_connects")), _f(r.get("kms_calls_per_vault_call"), "{:.2f}"),
                         _f(s["p99_us"], "{:,.0f}") if s else ""])
    return rows


MAIN_HDR = ["contender", "c", "round trip p50 µs", "p99 µs", "round trips/s",
            "plugin CPU µs/KMS call", "OpenBao CPU µs/KMS call", "client CPU µs/call",
            "new TCP connections", "KMS calls per Vault request",
            "Status p99 µs under load"]


def rss_rows(out):
    rows = []
    for name, v in out["rss_kib"].items():
        idle, after, settled = v.get("idle", {}), v.get("after", {}), v.get("after_2s", {})
        split = "–"
        if "RssAnon" in idle and "RssFile" in idle:  # runs saved before the split was recorded lack it
            split = f"{_mib(idle['RssAnon'])} / {_mib(idle['RssFile'])}"
        rows.append([name, _mib(idle.get("VmRSS")), split, _mib(after.get("VmRSS")),
                     _mib(settled.get("VmRSS")), _mib(after.get("VmHWM")),
                     str(after.get("Threads", "–"))])
    return rows


RSS_HDR = ["contender", "VmRSS idle MiB", "idle anonymous / file-backed MiB", "VmRSS after MiB", "VmRSS 2 s after MiB", "VmHWM MiB",
           "threads after"]


def burst_rows(out):
    return [[b["contender"], f"{b['seeds']}×{b['dups']}", str(b["concurrency"]), f"{b['wall_s']:.2f}",
             _f(b["throughput_per_s"]), _f(b["p99_us"]), _f(b["bao_requests"]),
             _f(b.get("plugin_vault_requests")), _f(b.get("plugin_cpu_us_per_call")),
             _f(b.get("bao_cpu_us_per_call")), _f(b.get("client_cpu_us_per_call"))]
            for b in out.get("burst", [])]


BURST_HDR = ["contender", "seeds×dups", "c", "time s", "decrypts/s", "p99 µs",
             "OpenBao requests", "plugin-counted Vault requests", "plugin CPU µs/decrypt",
             "OpenBao CPU µs/decrypt", "client CPU µs/decrypt"]


def idle_rows(out):
    idle = out.get("idle") or {}
    return [[n, _f(v["requests"]), _f(v["per_hour"]), v["source"]]
            for n, v in idle.get("per_plugin", {}).items()]


IDLE_HDR = ["plugin", "Vault requests in window", "per idle hour (extrapolated)", "counted from"]


TARGETS_HDR = ["target", "this run", "same run, for reference: the parts every plugin here must have", "verdict"]


def references(out) -> dict[str, str]:
    """What the parts every KMS plugin on this stack must have cost in the same run: gRPC over
    the Unix socket (the bare echo server) and a minimal Vault client (the floor's libcurl +
    OpenSSL + JSON client). A target below these cannot be met by Trousseau's own code."""
    runs = {n: _runs(out, n) for n in _names(out)}
    echo, fl = runs.get("echo", {}), runs.get("floor", {})
    status = _status(out)
    ref = {}
    e16, f16 = (echo.get(16) or {}).get("plugin_cpu_us_per_call"), (fl.get(16) or {}).get("client_cpu_us_per_call")
    if e16 is not None and f16 is not None:
        ref["cpu"] = (f"gRPC echo server {e16:,.0f} µs + the floor's Vault client {f16:,.0f} µs per "
                      f"Vault call = {e16 + f16:,.0f} µs at one Vault call per KMS call")
        k = (runs.get("trousseau+coalesce", {}).get(16) or {}).get("kms_calls_per_vault_call")
        ref["cpu_batch"] = (f"gRPC echo server {e16:,.0f} µs + the floor's Vault client {f16:,.0f} µs "
                            + (f"÷ {k:.2f} KMS calls per Vault request = {e16 + f16 / k:,.0f} µs" if k
                               else "÷ KMS calls per Vault request"))
    e1 = echo.get(1)
    if e1:
        ref["latency"] = (f"a bare gRPC echo round trip alone: {e1['p50_us'] / 2:,.0f} µs per call "
                          f"(p50 {e1['p50_us']:,.0f} µs ÷ 2)")
    es = status.get(("echo", 64))
    if es:
        ref["status"] = f"Status p99 of the bare gRPC echo under its own c=64 load: {es['p99_us']:,.0f} µs"
    rn = out.get("rss_kib", {}).get("null", {})
    idle = rn.get("idle", {}).get("VmRSS")
    after = rn.get("after_2s", rn.get("after", {})).get("VmRSS")
    if idle is not None:
        ref["rss_idle"] = f"the null server (gRPC + KMS layer, no Vault client, no TLS): {_mib(idle)} MiB"
    if after is not None:
        ref["rss_after"] = f"the null server 2 s after the same run: {_mib(after)} MiB"
    return ref


def targets(out) -> list[tuple[str, str, str, str]]:
    """(target, measured, same-run reference, verdict) for issue 9's targets, from this run."""
    res = []
    ref = references(out)
    runs = {n: _runs(out, n) for n in _names(out)}
    status = _status(out)
    tro = [n for n in ("trousseau", "trousseau+coalesce") if n in runs]

    def verdict(ok):
        return "–" if ok is None else ("met" if ok else "not met")

    for n in tro:
        r = runs[n].get(16)
        v = r["plugin_cpu_us_per_call"] if r else None
        res.append((f"{n}: plugin CPU per KMS call at c=16 ≤ 120 µs", _f(v, "{:,.0f} µs"),
                    ref.get("cpu_batch" if n == "trousseau+coalesce" else "cpu", "–"), verdict(None if v is None else v <= 120)))
    fl = runs.get("floor", {})
    for n in tro:
        r, f = runs[n].get(1), fl.get(1)
        v = (r["p50_us"] - f["p50_us"]) / 2 if r and f else None
        ver = verdict(None if v is None else v <= 60)
        if v is not None and v < 0:
            # Through the plugin cannot be faster than straight to OpenBao: the floor's run was
            # disturbed by the machine's other work, and this run says nothing about the target.
            ver = "inconclusive (the floor's run was slower than the plugin's: noise)"
        res.append((f"{n}: added latency over the floor at c=1 ≤ 60 µs per call (p50 round trip "
                    f"difference ÷ 2)", _f(v, "{:+,.0f} µs"), ref.get("latency", "–"), ver))
    f64, peer64 = fl.get(64), runs.get("go-peer", {}).get(64)
    if "trousseau" in runs and runs["trousseau"].get(64) and f64:
        x = runs["trousseau"][64]["throughput_per_s"] / f64["throughput_per_s"]
        res.append(("trousseau (no batching): throughput at c=64 ≥ 0.9× the floor", f"{x:.2f}×", "–",
                    verdict(x >= 0.9)))
    if "trousseau+coalesce" in runs and runs["trousseau+coalesce"].get(64) and f64:
        x = runs["trousseau+coalesce"][64]["throughput_per_s"] / f64["throughput_per_s"]
        res.append(("trousseau+coalesce: throughput at c=64 above the floor", f"{x:.2f}×", "–",
                    verdict(x > 1.0)))
    for n in tro:
        r = runs[n].get(64)
        if r and peer64:
            x = r["throughput_per_s"] / peer64["throughput_per_s"]
            res.append((f"{n}: throughput at c=64 ≥ 2× the Go peer", f"{x:.2f}×", "–", verdict(x >= 2.0)))
    for n in tro:
        s = status.get((n, 64))
        res.append((f"{n}: Status p99 ≤ 1 ms at c=64", _f(s["p99_us"] if s else None, "{:,.0f} µs"),
                    ref.get("status", "–"), verdict(None if not s else s["p99_us"] <= 1000)))
    for n in tro:
        v = out["rss_kib"].get(n, {})
        # Judged on the settled figure (2 s after the run, past the plugin's once-a-second heap
        # trim) when the run has it; runs recorded before it was sampled use the immediate one.
        after = v.get("after_2s", v.get("after", {})).get("VmRSS")
        idle = v.get("idle", {}).get("VmRSS")
        c_after = out.get("rss_after_concurrency")
        res.append((f"{n}: VmRSS ≤ 20 MiB after the c={c_after} run (2 s after)", _mib(after) + " MiB", ref.get("rss_after", "–"),
                    verdict(None if after is None or c_after != 256 else after <= 20 * 1024)))
        res.append((f"{n}: VmRSS ≤ 12 MiB idle", _mib(idle) + " MiB", ref.get("rss_idle", "–"),
                    verdict(None if idle is None else idle <= 12 * 1024)))
    bursts = {b["contender"]: b for b in out.get("burst", [])}
    bc, bn = bursts.get("trousseau+coalesce"), bursts.get("trousseau")
    if bc:
        calls = bc.get("plugin_vault_requests")
        if calls is None:
            calls = bc["bao_requests"]
        res.append((f"cold-start burst: Vault calls ≤ distinct seeds ({bc['seeds']})",
                    _f(calls), "–", verdict(calls <= bc["seeds"])))
        if bn:
            x = bn["wall_s"] / bc["wall_s"] if bc["wall_s"] else 0
            res.append(("cold-start burst: ≥ 3× faster than without coalescing", f"{x:.2f}×", "–",
                        verdict(x >= 3.0)))
    else:
        res.append(("cold-start burst with coalescing", "not run", "–", "not met (" +
                    out["missing"].get("trousseau+coalesce", "no coalescing contender") + ")"))
    res.append(("residue test stays at 0 copies; SECURITY.md promises hold", "not measured by the bench", "–",
                "see tests/integration (test_hardening)"))
    return res


def pass_views(out) -> list[dict]:
    """The run as each pass alone saw it (runs, Status runs and bursts of pass k), for a run
    made with --passes K > 1; [] otherwise. RSS and the idle window are sampled once per run."""
    k_all = (out.get("settings") or {}).get("passes", 1) or 1
    if k_all <= 1:
        return []
    def of_pass(r, k):
        # By the pass number each run records, so a run that failed in one pass does not pair
        # another contender's pass 3 with this one's pass 2; by position in older JSON.
        ps = r.get("passes", [])
        if ps and all("pass" in q for q in ps):
            return next((q for q in ps if q["pass"] == k + 1), None)
        return ps[k] if len(ps) > k else None

    views = []
    for k in range(k_all):
        v = dict(out)
        for key in ("runs", "status_under_load", "burst"):
            v[key] = [q for q in (of_pass(r, k) for r in out.get(key, [])) if q is not None]
        views.append(v)
    return views


def _number(text: str) -> float | None:
    m = re.search(r"[-+]?[\d,]*\.?\d+", text)
    return float(m.group(0).replace(",", "")) if m else None


def targets_with_passes(out) -> list[tuple[str, str, str, str]]:
    """targets(out), with each pass judged on its own where the passes disagree on a target's
    value: the value shown is the median pass's (each pass's listed after it) and the verdict the
    majority of the passes' verdicts, with the count, so a verdict that flips with the machine's
    noise shows as such. (A ratio of two medians, each from a different pass, would judge a
    pass that never happened.)"""
    rows = targets(out)
    views = pass_views(out)
    if not views:
        return rows
    per = [{t[0]: t for t in targets(v)} for v in views]
    res = []
    for target, value, ref, ver in rows:
        # The passes that could judge this target (a failed run leaves it out of its pass).
        seen = [x for x in (p.get(target) for p in per) if x is not None]
        if len(seen) >= 2 and (len({x[1] for x in seen}) > 1 or len(seen) < len(per)):
            nums = [_number(x[1]) for x in seen]
            if None not in nums:
                mid = sorted(range(len(seen)), key=lambda i: nums[i])[(len(seen) - 1) // 2]
                value = seen[mid][1]
            value = f"{value} (passes: {', '.join(x[1] for x in seen)})"
            if ver in ("met", "not met"):
                met = sum(x[3] == "met" for x in seen)
                ver = f"{'met' if 2 * met > len(seen) else 'not met'} (met in {met} of {len(seen)} passes)"
        res.append((target, value, ref, ver))
    return res


def own_cost_lines(out) -> list[str]:
    """Where a Trousseau KMS call's CPU goes, from the null/echo/trousseau rows of the same c."""
    lines = []
    for conc in out["settings"]["concurrency"]:
        get = lambda n: (_runs(out, n).get(conc) or {}).get("plugin_cpu_us_per_call")  # noqa: E731
        t, nu, e = get("trousseau"), get("null"), get("echo")
        fl = (_runs(out, "floor").get(conc) or {}).get("client_cpu_us_per_call")
        ref = (f" (the floor's client, libcurl + OpenSSL + minimal JSON, spent {fl:,.0f} µs per "
               f"Vault call in the same run)") if fl is not None else ""
        if None in (t, nu, e):
            if t is not None and fl is not None:
                lines.append(f"- c={conc}: trousseau {t:,.0f} µs per KMS call; the floor's client "
                             f"{fl:,.0f} µs per Vault call.")
            continue
        lines.append(f"- c={conc}: gRPC over the Unix socket (echo) {e:,.0f} µs, Trousseau's KMS "
                     f"layer (null − echo) {nu - e:+,.0f} µs, the Vault path: TLS, HTTP, JSON, token and "
                     f"health (trousseau − null) "
                     f"{t - nu:+,.0f} µs{ref}: {t:,.0f} µs per KMS call in all.")
    if lines:
        lines = ["", "Plugin CPU per KMS call, split (same run; 10 ms ticks, so small numbers are "
                 "coarse):", ""] + lines
    return lines


def _table(hdr, rows) -> list[str]:
    lines = ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _plain(hdr, rows) -> list[str]:
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(hdr)]
    out = ["  ".join(h.rjust(w[i]) for i, h in enumerate(hdr))]
    out += ["  ".join(c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    return out


def text(out) -> str:
    lines = [f"machine: {out['machine']['cpus']} CPUs, load average before "
             f"{' '.join(out['machine']['loadavg_before'])}, after "
             f"{' '.join(out['machine'].get('loadavg_after', []))}; network namespace: "
             f"{out['machine']['netns']}"]
    peer = out.get("peer", {})
    lines.append(f"go-peer: {peer.get('repo')} pinned at {peer.get('revision')} "
                 f"({peer.get('describe')}): " + (peer.get("note") or ""))
    for n, c in out["contenders"].items():
        if c.get("note"):
            lines.append(f"{n}: {c['note']}")
    for n, why in out["missing"].items():
        lines.append(f"MISSING {n}: {why}")
    lines.append("")
    lines += _plain(MAIN_HDR, main_table(out))
    if out.get("status_under_load"):
        lines.append("")
        lines.append(f"Status under load: {prober_desc(out)}.")
        lines += _plain(STATUS_HDR, status_rows(out))
    lines.append("")
    lines += _plain(RSS_HDR, rss_rows(out))
    if out.get("burst"):
        lines.append("")
        lines += _plain(BURST_HDR, burst_rows(out))
    if out.get("idle"):
        lines.append("")
        lines.append(f"idle window {out['idle']['window_s']:.0f} s, OpenBao handled "
                     f"{out['idle']['openbao_requests']:.0f} requests:")
        lines += _plain(IDLE_HDR, idle_rows(out))
    lines.append("")
    lines += _plain(TARGETS_HDR, [list(t) for t in targets_with_passes(out)])
    if out.get("skipped"):
        lines.append("skipped (over the time budget): " + ", ".join(out["skipped"]))
    for f in out.get("failures", []):
        lines.append(f"FAILED {f['run']}: {f['error']}")
    if not out.get("complete", True):
        lines.append("INCOMPLETE RUN (a call or a contender failed; see above)")
    return "\n".join(lines)


def plot(out, png) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt): no plot drawn"
    names = [n for n in _names(out) if n in PLOTTED or n.startswith("extra:")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in names:
        rs = _runs(out, n)
        cs = sorted(rs)
        ax1.plot(cs, [rs[c]["throughput_per_s"] for c in cs], marker="o", label=n)
        ax2.plot(cs, [rs[c]["p99_us"] / 1000.0 for c in cs], marker="o", label=n)
    for ax, title, ylab in ((ax1, "throughput", "round trips / s"),
                            (ax2, "p99 latency", "round trip p99 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (callers)")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    m = out["machine"]
    fig.suptitle(f"Encrypt+Decrypt round trips, 32-byte seeds, one OpenBao over mTLS; {m['cpus']} CPUs "
                 f"(shared), {m['date_utc']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return ""


def _oversubscribed(m) -> str:
    try:
        load = max(float(m["loadavg_before"][0]), float(m.get("loadavg_after", ["0"])[0]))
    except (KeyError, ValueError, IndexError):
        return ""
    if load < 2 * m["cpus"]:
        return ""
    return (f" **In this run the machine was heavily oversubscribed (load average up to {load:.0f} "
            f"on {m['cpus']} CPUs):** every contender got a small, varying share of the CPUs, so "
            "latencies are mostly queueing and the absolute numbers are far worse than on an idle "
            "machine; CPU per call (time the process actually ran) is the least disturbed column.")


def write_markdown(out, path) -> None:
    png = os.path.splitext(path)[0] + ".png"
    why_no_plot = plot(out, png)
    m = out["machine"]
    s = out["settings"]
    peer = out.get("peer", {})
    L = ["# Benchmarks", "",
         "<!-- Generated by `bench/run --report docs/benchmarks.md` (or `bench/report.py --from-json"
         " RUN.json --report docs/benchmarks.md`); edit bench/report.py, not this file. -->", "",
         "Issue 9's benchmark: every contender against **one real OpenBao** (mutual TLS, raft storage, "
         "transit key `aes256-gcm96`) in one run, all on loopback in a network namespace of its own. "
         "The load client is `trousseau-bench` for all of them: Encrypt then Decrypt of a 32-byte "
         "seed, timed as one round trip; every answer is checked. Numbers, not tests: nothing fails "
         "because a number is slow (bench/README.md explains every column).", "",
         f"**Run:** {m['date_utc']}, {m['cpus']} CPUs, kernel {m['kernel']}, load average "
         f"{' '.join(m['loadavg_before'])} before and {' '.join(m.get('loadavg_after', []))} after. "
         "**The machine is shared** with other builds and tests running at the same time: expect "
         "±20–30 % between runs on p50 and far more on p99; compare contenders of the same run, "
         "not runs." + _oversubscribed(m), "",
         f"Settings: concurrency {s['concurrency']}, {s['n1']} round trips at c=1 and "
         f"max({s['n']}, 4·c) above"
         + (f"; every load run, Status run and burst made {s['passes']} times, the contenders "
            "interleaved and their order rotated each pass: each number in the tables is the "
            "median of the passes (each column on its own); where the passes disagree on a target, "
            "the targets table judges each pass on its own, shows the median pass's value and "
            "every pass's, and gives the majority verdict with its count" if s.get("passes", 1) > 1 else "")
         + f"; Status prober one call every {s['status_pace_us']} µs; burst "
         f"{s['burst_seeds']} seeds × {s['burst_dups']} at c={s['burst_c']}; idle window "
         f"{s['idle_s']:.0f} s." + (" **Smoke run: too short to mean anything.**" if s["smoke"] else ""),
         "", "## Contenders", ""]
    desc = {
        "floor": "straight to OpenBao Transit, libcurl, the same CA/client certificate/token, one "
                 "kept-alive connection per caller: the floor",
        "trousseau": "`trousseau serve` (" + " ".join(out.get("plugin_version", [])[:1]) + ")",
        "trousseau+coalesce": "the same binary, coalescing and batching on",
        "go-peer": f"[{peer.get('repo')}](https://github.com/{peer.get('repo')}) pinned at "
                   f"`{peer.get('revision')}` ({peer.get('describe')}), built with CGO_ENABLED=0 "
                   "from a snapshot outside the project, token auth, mTLS through VAULT_CACERT / "
                   "VAULT_CLIENT_CERT / VAULT_CLIENT_KEY",
        "null": "`trousseau-null-server --mode null`: Trousseau's KMS layer (src/kms services, "
                "limits, audit record, metrics, wipe-on-free as in `serve`) over a backend that "
                "answers at once (bench only)",
        "echo": "`trousseau-null-server --mode echo`: a bare gRPC echo of the same proto (bench only)",
    }
    for n, c in out["contenders"].items():
        d = desc.get(n, "another Trousseau binary (`--extra-plugin`)")
        L.append(f"- **{n}**: {d}." + (f" {c['note']}." if c.get("note") else ""))
    for n, why in out["missing"].items():
        L.append(f"- **{n}**: missing: {why}")
    L += ["", "Trousseau runs with `limits.max_in_flight` 1024 (the defaults, 32/64, would shed the "
          "c=256 load with RESOURCE_EXHAUSTED: the bench measures cost, not shedding), seccomp "
          "enforced, privileges dropped, `log.level: info` (an audit record per call), everything "
          "else default.", "", "## Results", "",
          "CPU per KMS call: utime+stime of the process from `/proc/<pid>/stat` over the run "
          "(warm-up included, 10 ms ticks) ÷ KMS calls (a round trip is two). New TCP "
          "connections: `/proc/net/snmp` ActiveOpens in the bench's namespace over the run (to "
          "OpenBao; each is a TLS handshake; the floor opens one per caller). KMS calls per Vault "
          "request: the KMS calls ÷ the Vault requests the plugin counted on its own `/metrics` "
          "over the run (1 without batching or coalescing). Status p99: a "
          "second run at that concurrency with a paced Status prober beside it; "
          + prober_desc(out) + ". Client CPU: "
          "utime+stime of the `trousseau-bench` load client over the same run ÷ the same calls; for "
          "the floor that is a minimal Vault client's cost per Transit call (libcurl, OpenSSL, the "
          "JSON it needs), the reference for Trousseau's Vault path.", ""]
    L += _table(MAIN_HDR, main_table(out))
    if len({_prober_mode(r) for r in out.get("status_under_load", [])}) > 1:
        L += ["", "Status under load with the prober under either scheduler:", ""]
        L += _table(STATUS_HDR, status_rows(out))
    L += own_cost_lines(out)
    L += ["", "![throughput and p99 against concurrency](" + os.path.basename(png) + ")"
          if not why_no_plot else f"(plot: {why_no_plot})", "", "### Memory", "",
          f"VmRSS 1 s after start (idle), right after the c={out.get('rss_after_concurrency')} run "
          "and 2 s after it (the plugin trims its heap once a second, so the first sample races "
          "that trim; the target is judged on the second); VmHWM is the peak over the whole run. "
          "The idle split is RssAnon / RssFile from /proc/<pid>/status: file-backed pages are the "
          "binary's and libraries' code and read-only data, shared with the page cache; the "
          "kernel's fault-around maps them 64 KiB at a time, so they include cached pages the "
          "process never read (docs/performance.md, \"Idle RSS and fault-around\").", ""]
    L += _table(RSS_HDR, rss_rows(out))
    L += ["", "### Cold-start burst", "",
          "Distinct seeds encrypted first (untimed), then each decrypted several times, the "
          "duplicates next to each other in one queue pulled by all callers, as kube-apiserver "
          "does when it restarts and reads every object. Requests counted at OpenBao "
          "(`vault_core_handle_request_count` from its telemetry) and by the plugin "
          "(`trousseau_vault_requests_total`). CPU per decrypt: utime+stime of the plugin, "
          "OpenBao and the load client over the burst ÷ the decrypts; their sum against the "
          "machine's CPUs × the wall time says whether the burst waited or was bound by CPU.", ""]
    L += _table(BURST_HDR, burst_rows(out)) if out.get("burst") else ["(not run)"]
    idle = out.get("idle") or {}
    L += ["", "### Vault requests when idle", ""]
    if idle:
        L += [f"An idle window of {idle['window_s']:.0f} s with every plugin running and no load; "
              f"OpenBao handled {idle['openbao_requests']:.0f} requests in it. Extrapolated to an "
              "hour, so a short window is coarse (one background check more or less is "
              f"{3600 / idle['window_s']:.0f}/hour).", ""]
        L += _table(IDLE_HDR, idle_rows(out))
    else:
        L.append("(not run)")
    L += ["", "## Issue 9's targets in this run", "",
          "The reference column is what this run measured for parts that any KMS plugin on this "
          "stack has: gRPC over the Unix socket (`echo`, a bare server of the same proto), a "
          "minimal Vault client (the `floor`'s libcurl + OpenSSL + JSON client), and gRPC plus "
          "Trousseau's KMS layer over no Vault at all (`null`). Where a target sits below an `echo` or "
          "`floor` reference, no change to Trousseau's own code can meet it on this machine: the "
          "plugin can only approach the reference (or, with batching, divide the Vault client's "
          "share). The `null` reference includes Trousseau's own KMS layer.", ""]
    L += _table(TARGETS_HDR, [list(t) for t in targets_with_passes(out)])
    if out.get("skipped"):
        L += ["", "Skipped (over the time budget): " + ", ".join(out["skipped"])]
    if out.get("failures"):
        L += ["", "**Failed runs** (a call failed, so these numbers are absent):", ""]
        L += [f"- {f['run']}: {f['error']}" for f in out["failures"]]
    L += ["", "## Regenerate", "", "```sh",
          "/work/main/.venv/bin/pip install -r bench/requirements.txt   # matplotlib, for the plot",
          "bench/run --report docs/benchmarks.md --json-out docs/benchmarks.json",
          "bench/report.py --from-json docs/benchmarks.json --report docs/benchmarks.md  # re-render this run",
          "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-json", required=True)
    ap.add_argument("--report", help="write the Markdown (and the PNG beside it)")
    a = ap.parse_args()
    with open(a.from_json) as f:
        out = json.load(f)
    print(text(out))
    if a.report:
        write_markdown(out, a.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
