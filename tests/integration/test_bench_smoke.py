"""bench/run --smoke: the benchmark harness runs every contender it has, briefly, to the end.

Numbers are not asserted (a benchmark measures; docs/benchmarks.md holds them): this test only
proves that `bench/run` still works end to end against a real OpenBao with the built binaries,
that every available contender produced error-free runs, and that a contender that cannot run
(the Go peer when its build is not cached, as in CI, which cannot fetch its repository; the
coalescing variant with a binary whose config parser refuses `performance:`) is reported missing
with a reason instead of crashing the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from itlib.plugin import plugin_binary

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUN = os.path.join(REPO, "bench", "run")
HARNESS = os.path.join(REPO, "bench", "harness.py")


def _bin(env: str, default: str) -> str:
    return os.environ.get(env) or os.path.join(os.path.dirname(plugin_binary()), "..", "bench", default)


def _need(path: str, what: str) -> str:
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        msg = f"{what} not built at {path}"
        if os.environ.get("TROUSSEAU_REQUIRE_BIN") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def bins():
    return {
        "TROUSSEAU_BIN": _need(plugin_binary(), "trousseau"),
        "TROUSSEAU_BENCH_BIN": _need(_bin("TROUSSEAU_BENCH_BIN", "trousseau-bench"), "trousseau-bench"),
        "TROUSSEAU_NULL_BIN": _need(_bin("TROUSSEAU_NULL_BIN", "trousseau-null-server"),
                                    "trousseau-null-server"),
    }


def _peer_cached() -> str | None:
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import harness  # noqa: PLC0415 - only for the pinned revision's cache path
    if os.environ.get("BENCH_PEER_BIN"):
        return os.environ["BENCH_PEER_BIN"]
    p = os.path.join(harness.PEER_CACHE, "vault-kubernetes-kms")
    return p if os.path.isfile(p) else None


def test_smoke_runs_every_available_contender(bins, tmp_path):
    out_json = tmp_path / "smoke.json"
    report = tmp_path / "bench.md"
    env = dict(os.environ, BENCH_PYTHON=sys.executable, **bins)
    r = subprocess.run(
        [RUN, "--smoke", "--no-build", "--json-out", str(out_json), "--report", str(report),
         "--extra-plugin", f"again={bins['TROUSSEAU_BIN']}", "--extra-perf", "again:max_idle_threads=4",
         "--passes", "2"],
        env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"bench/run --smoke failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}"
    out = json.loads(out_json.read_text())
    assert out["complete"] is True
    assert out["settings"]["smoke"] is True
    assert out["settings"]["passes"] == 2

    ran = {x["contender"] for x in out["runs"]}
    missing = out["missing"]
    # Always available: the floor, the plugin, the extra plugin, Trousseau's KMS layer on the null
    # backend and the bare echo.
    for name in ("floor", "trousseau", "extra:again", "null", "echo"):
        assert name in ran, f"{name} did not run; missing: {missing}\n{r.stderr[-3000:]}"
    # --extra-perf reached the extra plugin's config (the binary accepted it), not the others'.
    assert '"max_idle_threads": 4' in out["contenders"]["extra:again"]["note"], out["contenders"]
    assert "max_idle_threads" not in out["contenders"]["trousseau"]["note"]
    # The coalescing variant runs, or is missing because this binary refuses its config.
    assert "trousseau+coalesce" in ran or "performance" in missing.get("trousseau+coalesce", ""), missing

    # The Go peer: run when its build is cached, else reported missing with a reason (CI).
    peer = _peer_cached()
    if peer:
        assert "go-peer" in ran, f"go-peer cached at {peer} but did not run: {missing}"
    else:
        print(f"go-peer not built here: the harness must report it missing: {missing.get('go-peer')}")
        assert "go-peer" not in ran
        assert missing.get("go-peer"), missing
        assert f"MISSING go-peer: {missing['go-peer']}" in r.stdout
    assert out["peer"]["revision"] in r.stdout  # the pinned revision is printed

    for x in out["runs"] + out["status_under_load"] + out["burst"]:
        # Two passes each, and the row's numbers are the passes' medians (of two: the mean).
        assert len(x["passes"]) == 2, x
        for key in ("p50_us", "wall_s"):
            if key in x:
                assert x[key] == pytest.approx(sum(p[key] for p in x["passes"]) / 2), (key, x)
    for x in out["status_under_load"]:
        assert x["status"]["ok"] == sum(p["status"]["ok"] for p in x["passes"]), x
    for x in out["runs"]:
        assert x["errors"] == 0 and x["ok"] > 0, x
        assert x["concurrency"] in (1, 16)
        if x["contender"] != "floor":
            assert x["plugin_cpu_us_per_call"] is not None and x["plugin_cpu_us_per_call"] >= 0
    assert {c for x in out["runs"] if x["contender"] == "trousseau" for c in [x["concurrency"]]} == {1, 16}
    # Status under load for every plugin, a burst for every Vault-backed plugin, RSS and idle counts.
    assert {x["contender"] for x in out["status_under_load"]} == ran - {"floor"}
    for x in out["status_under_load"]:
        assert x["status"]["ok"] > 0, x
        # The default prober runs real-time (bench/README.md), and the run records it.
        assert x["status_prober"] == "rt", x
    assert out["settings"]["status_prober"] == "rt"
    assert "the Status prober ran under SCHED_FIFO" in r.stdout  # the report says so
    bursts = {b["contender"]: b for b in out["burst"]}
    assert "trousseau" in bursts
    b = bursts["trousseau"]
    assert b["errors"] == 0 and b["ok"] == b["seeds"] * b["dups"], b
    # Without coalescing every decrypt is a Vault call; counted on both sides.
    assert b["plugin_vault_requests"] >= b["seeds"], b
    assert b["bao_requests"] >= b["seeds"], b
    # The burst's CPU per decrypt, each process on its own (present and not negative).
    for key in ("plugin_cpu_us_per_call", "bao_cpu_us_per_call", "client_cpu_us_per_call"):
        assert b[key] >= 0, (key, b)
    assert out["rss_kib"]["trousseau"]["after"]["VmRSS"] > 0
    assert out["rss_kib"]["trousseau"]["after_2s"]["VmRSS"] > 0
    assert "trousseau" in out["idle"]["per_plugin"]

    md = report.read_text()
    assert "## Issue 9's targets in this run" in md and "| trousseau | 16 |" in md
    assert "made 2 times, the contenders interleaved" in md
    png = tmp_path / "bench.png"
    try:
        import matplotlib  # noqa: F401, PLC0415
        assert png.is_file() and png.stat().st_size > 1000
    except ImportError:
        assert "matplotlib is not installed" in md


def test_zero_passes_is_refused_before_starting_anything(bins):
    r = subprocess.run(
        [sys.executable, HARNESS, "--plugin-bin", bins["TROUSSEAU_BIN"],
         "--bench-bin", bins["TROUSSEAU_BENCH_BIN"], "--passes", "0"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert "--passes must be at least 1" in r.stderr, r.stderr


@pytest.mark.parametrize("spec, want", [
    ("no-equals-sign", "--extra-plugin wants NAME=PATH"),
    ("=/bin/true", "--extra-plugin wants NAME=PATH"),
    ("x=/nonexistent/trousseau", "is not built"),
])
def test_bad_extra_plugin_is_refused_before_starting_anything(bins, spec, want):
    assert want in _refused(bins, "--extra-plugin", spec)


def _refused(bins, *args: str) -> str:
    """The harness's stderr for arguments it must refuse (exit 2) before starting anything."""
    r = subprocess.run(
        [sys.executable, HARNESS, "--plugin-bin", bins["TROUSSEAU_BIN"],
         "--bench-bin", bins["TROUSSEAU_BENCH_BIN"], *args],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    return r.stderr


@pytest.mark.parametrize("spec, want", [
    ("again", "--extra-perf wants NAME:KEY=VALUE"),
    ("again:max_idle_threads", "--extra-perf wants NAME:KEY=VALUE"),
    ("again:=4", "--extra-perf wants NAME:KEY=VALUE"),
    ("other:max_idle_threads=4", "no --extra-plugin named 'other'"),
])
def test_bad_extra_perf_is_refused_before_starting_anything(bins, spec, want):
    assert want in _refused(bins, "--extra-plugin", f"again={bins['TROUSSEAU_BIN']}", "--extra-perf", spec)
