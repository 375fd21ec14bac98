"""performance.status_thread_realtime_priority (issue 9, docs/performance.md change 15).

The plugin puts its `kms-status` thread (Status and Version, src/kms/status_loop.cpp) under
SCHED_FIFO at start, while it is still root, with SCHED_RESET_ON_FORK; every other thread stays
under the normal scheduler. Checked from outside on the running plugin, after the privilege
drop and the seccomp filter: the thread's policy and priority as the kernel reports them
(`sched_getscheduler`/`sched_getparam` on its thread id, and /proc/<pid>/task/<tid>/stat fields
40-41), the start-up log line, and the fallback when the start-up has no CAP_SYS_NICE
(`setpriv --bounding-set -sys_nice`, as in a container without it): a warning naming what is
missing, the thread at normal priority, Status answered. No timing is asserted.

Run as root (CI is): the plugin must start as root to have the privilege.
"""
from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from test_core import wait_ok

pytestmark = [
    pytest.mark.plugin,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the plugin sets the priority as root)"),
]

SCHED_OTHER, SCHED_FIFO = os.SCHED_OTHER, os.SCHED_FIFO
RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)


def threads(pid: int) -> dict[int, str]:
    """tid -> comm for every thread of the process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out[int(tid)] = f.read().strip()
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return out


def status_tid(pid: int) -> int:
    tids = [t for t, comm in threads(pid).items() if comm == "kms-status"]
    assert len(tids) == 1, f"want one kms-status thread, got {threads(pid)}"
    return tids[0]


def stat_sched(pid: int, tid: int) -> tuple[int, int]:
    """(rt_priority, policy): fields 40 and 41 of /proc/<pid>/task/<tid>/stat."""
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): field N is fields[N - 3]
    return int(fields[40 - 3]), int(fields[41 - 3])


def log_events(pl, event: str) -> list[dict]:
    out = []
    for line in pl.settled_stderr_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


def exercise(pl, n: int = 20) -> None:
    """Encrypts and Decrypts (on the sync-server threads) and Status calls (on kms-status)."""
    for i in range(n):
        seed = os.urandom(32)
        ct = pl.encrypt(seed, uid=f"prio-{i}")
        assert pl.decrypt(ct.ciphertext, key_id=ct.key_id).plaintext == seed
        assert pl.status().healthz == "ok"


def assert_only_status_thread_realtime(pl, priority: int) -> None:
    pid = pl.proc.pid
    tid = status_tid(pid)
    assert os.sched_getscheduler(tid) == SCHED_FIFO | RESET_ON_FORK
    assert os.sched_getparam(tid).sched_priority == priority
    assert stat_sched(pid, tid) == (priority, SCHED_FIFO)
    # Every other thread, including those gRPC started after the start-up (sync-server threads
    # made under load), is under the normal scheduler.
    others = {t: c for t, c in threads(pid).items() if t != tid}
    assert len(others) >= 3, others
    for t, comm in others.items():
        try:
            policy = stat_sched(pid, t)
        except FileNotFoundError:
            continue
        assert policy == (0, SCHED_OTHER), f"thread {t} ({comm}) has policy {policy}"


def test_status_thread_is_fifo_by_default_and_nothing_else_is(plugin_factory):
    pl = plugin_factory.start()
    wait_ok(pl)
    exercise(pl)
    assert_only_status_thread_realtime(pl, 1)
    recs = log_events(pl, "status_thread")
    assert len(recs) == 1, recs
    assert recs[0]["level"] == "info" and "SCHED_FIFO" in recs[0]["msg"], recs
    assert recs[0]["priority"] == 1
    # The policy was set before the drop and survives it: the process runs as 65532, no caps.
    with open(f"/proc/{pl.proc.pid}/status") as f:
        st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert st["Uid"].split()[0] == "65532"
    assert int(st["CapEff"], 16) == 0


def test_status_thread_priority_is_configurable(plugin_factory):
    pl = plugin_factory.start({"performance": {"status_thread_realtime_priority": 7}})
    wait_ok(pl)
    exercise(pl, 5)
    assert_only_status_thread_realtime(pl, 7)


def test_status_thread_priority_off(plugin_factory):
    pl = plugin_factory.start({"performance": {"status_thread_realtime_priority": 0}})
    rec = assert_status_thread_normal(pl)
    assert rec["level"] == "info", rec
    assert "normal scheduler" in rec["msg"] and "status_thread_realtime_priority: 0" in rec["msg"]


def assert_status_thread_normal(pl) -> dict:
    """Exercises a started plugin, checks its kms-status thread is SCHED_OTHER (by the syscall
    and by /proc), and returns its one status_thread log line."""
    wait_ok(pl)
    exercise(pl, 5)
    tid = status_tid(pl.proc.pid)
    assert os.sched_getscheduler(tid) == SCHED_OTHER
    assert stat_sched(pl.proc.pid, tid) == (0, SCHED_OTHER)
    recs = log_events(pl, "status_thread")
    assert len(recs) == 1, recs
    return recs[0]


def start_wrapped_and_refused(plugin_factory, it_dir, suffix: str, prefix: str) -> dict:
    """Starts a plugin through `exec <prefix> <binary> ...` (exec keeps the pid: /proc/<pid> is
    the plugin's), exercises it, checks its kms-status thread stayed SCHED_OTHER, and returns its
    one status_thread log line."""
    pl = plugin_factory.make()
    # A copy in the test's directory: the build tree may sit where uid 65532 cannot reach it (a
    # clean clone under a 0700 mktemp directory, as CI makes).
    binary = os.path.join(it_dir, f"{pl.name}-trousseau")
    shutil.copy(pl.binary, binary)
    os.chmod(binary, 0o755)
    wrapper = os.path.join(it_dir, f"{pl.name}-{suffix}.sh")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec {prefix} -- {binary} \"$@\"\n")
    os.chmod(wrapper, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    pl.binary = wrapper
    pl.spawn()
    plugin_factory.started.append(pl)
    pl.wait_ready(15.0)
    return assert_status_thread_normal(pl)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_sys_nice_it_warns_and_serves(plugin_factory, it_dir):
    """A start-up without CAP_SYS_NICE (a container that does not add it): the priority cannot
    be set; one warning says why and how to silence it; the plugin serves at normal priority."""
    # Root without CAP_SYS_NICE in its bounding set gets no CAP_SYS_NICE across exec;
    # RLIMIT_RTPRIO 0 as for any root shell.
    rec = start_wrapped_and_refused(plugin_factory, it_dir, "no-sys-nice",
                                    "setpriv --bounding-set -sys_nice --inh-caps -sys_nice prlimit --rtprio=0")
    assert rec["level"] == "warn", rec
    assert "status_thread_realtime_priority: 0" in rec["msg"]
    assert rec["priority"] == 1
    assert "Operation not permitted" in rec["error"] and "CAP_SYS_NICE" in rec["error"], rec


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_started_unprivileged_it_says_so_at_info_and_serves(plugin_factory, it_dir):
    """Started as 65532 with no capability, as the packaged systemd unit does (which also sets
    RestrictRealtime=yes): the priority cannot be set, which that deployment chose, so the one
    line is info, not a warning; the plugin serves at normal priority."""
    rec = start_wrapped_and_refused(plugin_factory, it_dir, "unprivileged",
                                    "setpriv --reuid=65532 --regid=65532 --clear-groups --inh-caps=-all "
                                    "--bounding-set=-all --no-new-privs prlimit --rtprio=0")
    assert rec["level"] == "info", rec
    assert "started without privileges" in rec["msg"], rec
    assert "Operation not permitted" in rec["error"], rec
