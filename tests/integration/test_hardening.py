"""Issue 3: the running plugin is sandboxed, and plaintext does not linger in its memory.

Run as root (CI is): the plugin starts as root and must drop to 65532:65532 itself, and the
residue scan reads /proc/<pid>/mem, which needs CAP_SYS_PTRACE over a non-dumpable process.
"""
from __future__ import annotations

import base64
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_core import wait_ok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (privilege drop, /proc/<pid>/mem)")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def test_running_plugin_is_confined(plugin):
    wait_ok(plugin)
    st = proc_status(plugin.proc.pid)
    assert st["Seccomp"] == "2", "seccomp filter mode"
    assert st["NoNewPrivs"] == "1"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, f"{cap} = {st[cap]}"
    uids = [int(x) for x in st["Uid"].split()]
    gids = [int(x) for x in st["Gid"].split()]
    assert all(u == 65532 for u in uids), st["Uid"]
    assert all(g == 65532 for g in gids), st["Gid"]
    assert st["Groups"].split() in ([], ["65532"])
    # every thread, not only the main one, runs under the filter
    for tid in os.listdir(f"/proc/{plugin.proc.pid}/task"):
        with open(f"/proc/{plugin.proc.pid}/task/{tid}/status") as f:
            text = f.read()
        assert re.search(r"^Seccomp:\s+2$", text, re.M), f"thread {tid} is not filtered"
        assert re.search(r"^CapEff:\s+0+$", text, re.M), f"thread {tid} has capabilities"
    # and it still serves
    seed = os.urandom(32)
    assert plugin.decrypt(plugin.encrypt(seed).ciphertext).plaintext == seed


def test_core_dumps_are_disabled(plugin):
    wait_ok(plugin)
    with open(f"/proc/{plugin.proc.pid}/limits") as f:
        core = next(line for line in f if line.startswith("Max core file size"))
    assert core.split()[4] == "0" and core.split()[5] == "0", core


# ------------------------------------------------------------------ residue
def writable_regions(pid: int):
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2 or "w" not in parts[1] or "r" not in parts[1]:
                continue
            name = parts[5] if len(parts) > 5 else ""
            if name in ("[vvar]", "[vsyscall]", "[vdso]"):
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            yield lo, hi, name


def count_in_memory(pid: int, needles: list[bytes]) -> dict[bytes, int]:
    counts = {n: 0 for n in needles}
    overlap = max(len(n) for n in needles) - 1
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for lo, hi, _name in writable_regions(pid):
            pos, tail = lo, b""
            while pos < hi:
                size = min(1 << 22, hi - pos)
                try:
                    mem.seek(pos)
                    chunk = mem.read(size)
                except OSError:
                    chunk = b""
                data = tail + chunk
                for n in needles:
                    counts[n] += data.count(n)
                tail = data[-overlap:] if len(data) >= overlap else data
                # do not count a match twice across the seam
                for n in needles:
                    counts[n] -= tail.count(n)
                pos += size
            for n in needles:
                counts[n] += tail.count(n)
    return counts


def residue(plugin, rounds: int = 200, concurrency: int = 8) -> dict[str, int]:
    """Round-trips `rounds` seeds that share a 6-byte tag, then counts tag copies in memory.

    Every seed is TAG + 26 random bytes: the raw tag finds plaintext copies, and because the
    tag is 6 bytes (a multiple of 3) its base64 is a fixed 8-character prefix of every seed's
    base64, which finds the encoded copies (JSON bodies, Vault answers).
    """
    tag = os.urandom(6)
    b64_tag = base64.b64encode(tag)
    seeds = [tag + os.urandom(26) for _ in range(rounds)]

    def round_trip(seed):
        ct = plugin.encrypt(seed, uid="residue").ciphertext
        assert plugin.decrypt(ct).plaintext == seed

    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(round_trip, seeds))
    plugin.close_channel()
    time.sleep(1.0)  # let in-flight work finish and buffers be released
    counts = count_in_memory(plugin.proc.pid, [tag, b64_tag])
    return {"raw": counts[tag], "base64": counts[b64_tag], "seeds": rounds}


def test_no_plaintext_residue_after_requests(plugin_factory):
    pl = plugin_factory.start()
    wait_ok(pl)
    found = residue(pl)
    print(f"\nresidue after {found['seeds']} round trips: raw={found['raw']} base64={found['base64']}")
    assert found["raw"] == 0 and found["base64"] == 0, found


def test_residue_scan_finds_a_planted_copy(plugin_factory):
    """The scanner itself must be able to fail: with hygiene off, copies are found."""
    pl = plugin_factory.start({"hygiene": {"wipe_freed_memory": False}})
    wait_ok(pl)
    found = residue(pl, rounds=100)
    print(f"\nresidue with wipe_freed_memory off: raw={found['raw']} base64={found['base64']}")
    assert found["raw"] + found["base64"] > 0, found


def test_debug_logs_hold_no_secrets(plugin_factory, bao):
    pl = plugin_factory.start({"log": {"level": "debug"}})
    wait_ok(pl)
    seeds = [os.urandom(32) for _ in range(20)]
    for s in seeds:
        ct = pl.encrypt(s, uid="log-secrets").ciphertext
        assert pl.decrypt(ct).plaintext == s
    bad = b"vault:v1:" + base64.b64encode(os.urandom(40))
    with pytest.raises(Exception):
        pl.decrypt(bad)
    assert pl.terminate(10.0) == 0
    out = pl.stderr_text() + pl.stdout_text()
    assert '"type":"audit"' in out, "audit records missing"
    for secret in (bao.plugin_token, bao.root_token):
        assert secret not in out
    for s in seeds:
        for form in (base64.b64encode(s).decode(), s.hex(), base64.b64encode(s).decode()[:16]):
            assert form not in out


def test_binary_passes_hardening_check(plugin_bin):
    r = subprocess.run(["hardening-check", "--nocfprotection", plugin_bin],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([os.path.join(REPO, "scripts", "check-binary"), plugin_bin],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_runtime_seccomp_profile_is_current_and_bounded(plugin_bin):
    import json
    printed = subprocess.run([plugin_bin, "seccomp-profile"], capture_output=True, text=True,
                             check=True).stdout
    path = os.path.join(REPO, "security", "seccomp", "trousseau.json")
    with open(path) as f:
        committed = f.read()
    assert committed == printed, "security/seccomp/trousseau.json is stale: regenerate with " \
                                 "`trousseau seccomp-profile > security/seccomp/trousseau.json`"
    prof = json.loads(committed)
    assert prof["defaultAction"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL")
    assert prof["architectures"] == ["SCMP_ARCH_X86_64"]
    allowed = {n for rule in prof["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
               for n in rule["names"]}
    rules = subprocess.run([plugin_bin, "seccomp-rules"], capture_output=True, text=True,
                           check=True).stdout
    in_process = {line.split()[0] for line in rules.splitlines() if line.strip()}
    assert in_process <= allowed, in_process - allowed
    extra = allowed - in_process
    assert len(extra) <= 40, sorted(extra)
    for dangerous in ("ptrace", "process_vm_readv", "process_vm_writev", "mount", "bpf",
                      "kexec_load", "init_module", "finit_module", "setns", "unshare",
                      "perf_event_open", "userfaultfd", "keyctl", "fork", "vfork", "pivot_root"):
        assert dangerous not in allowed, dangerous
