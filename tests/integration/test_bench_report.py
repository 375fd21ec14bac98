"""bench/harness.py's merging of passes and bench/report.py's per-pass verdicts, on made-up runs.

No binaries and no OpenBao: these check the arithmetic that turns several passes into one table
row, and that a target whose verdict flips between passes says so instead of hiding it behind a
median (test_bench_smoke.py runs the real thing end to end).
"""
from __future__ import annotations

import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)

import harness  # noqa: E402
import report  # noqa: E402


def _run(name, c, cpu, p50=1000.0, tput=1000.0, **extra):
    r = {"contender": name, "concurrency": c, "plugin_cpu_us_per_call": cpu, "p50_us": p50,
         "p99_us": 2 * p50, "throughput_per_s": tput, "ok": 3000, "errors": 0,
         "kms_calls_per_vault_call": 1.0}
    r.update(extra)
    return r


def test_merge_takes_each_number_median_and_keeps_what_the_passes_agree_on():
    passes = [_run("trousseau", 16, cpu, p50=p50, proc_after={"VmRSS": 1})
              for cpu, p50 in ((300, 900.0), (100, 1100.0), (200, 1000.0))]
    m = harness.merge_passes(passes)
    assert m["plugin_cpu_us_per_call"] == 200   # median of 300, 100, 200: not the mean, not the last
    assert m["p50_us"] == 1000.0
    assert m["concurrency"] == 16 and isinstance(m["concurrency"], int)  # equal: kept as it was
    assert m["ok"] == 3000                      # a run's own count is not summed
    assert m["contender"] == "trousseau"
    assert [p["plugin_cpu_us_per_call"] for p in m["passes"]] == [300, 100, 200]
    assert all("proc_after" not in p for p in m["passes"])


def test_merge_sums_the_status_probers_calls_and_medians_its_percentiles():
    passes = [dict(_run("trousseau", 64, 200), status={"ok": ok, "p99_us": p99, "p50_us": 100.0})
              for ok, p99 in ((40, 900.0), (50, 5000.0), (60, 700.0))]
    m = harness.merge_passes(passes)
    assert m["status"]["ok"] == 150
    assert m["status"]["p99_us"] == 900.0
    assert m["status"]["p50_us"] == 100.0


def test_one_pass_is_the_run_itself():
    r = _run("trousseau", 16, 150)
    m = harness.merge_passes([r])
    assert {k: v for k, v in m.items() if k != "passes"} == r
    assert len(m["passes"]) == 1


def _out(passes_cpu: list[float]) -> dict:
    rows = [_run("trousseau", 16, c) for c in passes_cpu]
    runs = [harness.merge_passes(rows)]
    return {"settings": {"passes": len(passes_cpu), "concurrency": [16]}, "runs": runs,
            "status_under_load": [], "burst": [], "rss_kib": {}, "missing": {}}


def _cpu_row(rows):
    [row] = [r for r in rows if r[0].startswith("trousseau: plugin CPU per KMS call at c=16")]
    return row


def test_a_verdict_that_flips_between_passes_shows_every_pass():
    row = _cpu_row(report.targets_with_passes(_out([100, 130, 140])))
    assert row[1] == "130 µs (passes: 100 µs, 130 µs, 140 µs)"
    assert row[3] == "not met (met in 1 of 3 passes)"


def test_passes_that_agree_add_nothing():
    row = _cpu_row(report.targets_with_passes(_out([130, 130, 130])))
    assert row[1] == "130 µs"
    assert row[3] == "not met"


def test_a_single_pass_run_reads_as_before():
    out = _out([110])
    assert report.targets_with_passes(out) == report.targets(out)
    assert report.pass_views(out) == []


@pytest.mark.parametrize("cpus, verdict", [([90, 100, 200], "met (met in 2 of 3 passes)"),
                                           ([200, 300, 100], "not met (met in 1 of 3 passes)")])
def test_the_median_decides_and_the_count_tells(cpus, verdict):
    assert _cpu_row(report.targets_with_passes(_out(cpus)))[3] == verdict


def test_a_ratio_is_judged_pass_by_pass_not_from_medians_of_different_passes():
    # Column medians would say 1,100 / 1,000 = 1.10× (met), from a floor and a plugin run of
    # different passes; pass by pass it was 0.90×, 0.93×, 1.38×: met once.
    floor = [_run("floor", 64, None, tput=t) for t in (1000, 1400, 800)]
    coal = [_run("trousseau+coalesce", 64, 150, tput=t) for t in (900, 1300, 1100)]
    out = {"settings": {"passes": 3, "concurrency": [64]},
           "runs": [harness.merge_passes(floor), harness.merge_passes(coal)],
           "status_under_load": [], "burst": [], "rss_kib": {}, "missing": {}}
    [row] = [r for r in report.targets_with_passes(out) if "above the floor" in r[0]]
    assert row[1] == "0.93× (passes: 0.90×, 0.93×, 1.38×)"
    assert row[3] == "not met (met in 1 of 3 passes)"
    [plain] = [r for r in report.targets(out) if "above the floor" in r[0]]
    assert plain[1] == "1.10×"  # what the medians alone would have claimed


def test_each_pass_starts_one_contender_later():
    names = ["floor", "trousseau", "go-peer"]
    assert [harness.rotated(names, p) for p in range(4)] == [
        ["floor", "trousseau", "go-peer"], ["trousseau", "go-peer", "floor"],
        ["go-peer", "floor", "trousseau"], ["floor", "trousseau", "go-peer"]]
    assert harness.rotated([], 2) == []


def test_a_failed_pass_does_not_pair_different_passes():
    # The plugin's pass 2 failed: its passes are 1 and 3. Pass 3's ratio must use the floor's
    # pass 3, not its pass 2.
    floor = [dict(_run("floor", 64, None, tput=t), **{"pass": i + 1})
             for i, t in enumerate((1000, 500, 2000))]
    coal = [dict(_run("trousseau+coalesce", 64, 150, tput=t), **{"pass": i})
            for i, t in ((1, 1100), (3, 2200))]
    out = {"settings": {"passes": 3, "concurrency": [64]},
           "runs": [harness.merge_passes(floor), harness.merge_passes(coal)],
           "status_under_load": [], "burst": [], "rss_kib": {}, "missing": {}}
    assert "pass" not in out["runs"][0]
    views = report.pass_views(out)
    got = [[r["throughput_per_s"] for r in v["runs"]] for v in views]
    assert got == [[1000, 1100], [500], [2000, 2200]]
    [row] = [r for r in report.targets_with_passes(out) if "above the floor" in r[0]]
    assert row[3] == "met (met in 2 of 2 passes)"
