"""Makes a running process execute one system call of our choosing, from outside (x86_64).

The plugin has no test hook that makes a forbidden call (and should not have one), so the test
makes one of its own threads do it, the way a debugger's `call` does: attach with ptrace to a
thread blocked in a syscall, point its instruction pointer back at the `syscall` instruction it
just executed, load the registers for the call we want, single-step, then restore everything.
The call is then made by the plugin's own thread, under its own seccomp filters, so the kernel
judges it exactly as it would judge a call from the plugin's code. Needs root (CAP_SYS_PTRACE:
the plugin is not dumpable).
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

PTRACE_PEEKTEXT = 1
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SINGLESTEP = 9
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

SYS_GETPID = 39
SYS_PTRACE = 101
SYS_FUTEX = 202

_REG_NAMES = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
              "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
              "gs_base", "ds", "es", "fs", "gs"]


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in _REG_NAMES]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def _ptrace(req: int, tid: int, addr=None, data=None) -> int:
    ctypes.set_errno(0)
    r = _libc.ptrace(req, tid, addr, data)
    err = ctypes.get_errno()
    if r == -1 and err != 0:
        raise OSError(err, f"ptrace({req}, {tid}): {os.strerror(err)}")
    return r


@dataclass
class Outcome:
    tid: int
    killed_by: int | None      # the signal that ended the process, when it died
    result: int | None         # the syscall's return value, when it returned


def blocked_thread(pid: int, syscall_nr: int = SYS_FUTEX) -> int:
    """A thread of pid sleeping in syscall_nr (a futex wait restarts cleanly after the
    injection, unlike the main thread's sigwait)."""
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if fields and fields[0] == str(syscall_nr) and tid != pid:
            return tid
    raise RuntimeError(f"no thread of {pid} is blocked in syscall {syscall_nr}")


def inject_syscall(tid: int, nr: int, *args: int) -> Outcome:
    _ptrace(PTRACE_SEIZE, tid)
    detached = False
    try:
        _ptrace(PTRACE_INTERRUPT, tid)
        _, status = os.waitpid(tid, WALL)
        if not os.WIFSTOPPED(status):
            raise RuntimeError(f"thread {tid} did not stop: status {status:#x}")
        saved = Regs()
        _ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(saved))
        # a thread stopped inside a blocking syscall sits right after its `syscall` (0f 05)
        word = _ptrace(PTRACE_PEEKTEXT, tid, ctypes.c_void_p(saved.rip - 2)) & 0xFFFF
        if word != 0x050F:
            raise RuntimeError(f"thread {tid}: no syscall instruction before rip {saved.rip:#x}")
        regs = Regs.from_buffer_copy(saved)
        regs.rip = saved.rip - 2
        regs.rax = nr
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF     # no syscall restart for the injected call
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & 0xFFFFFFFFFFFFFFFF)
        _ptrace(PTRACE_SETREGS, tid, None, ctypes.addressof(regs))
        _ptrace(PTRACE_SINGLESTEP, tid)
        _, status = os.waitpid(tid, WALL)
        if os.WIFSIGNALED(status):
            detached = True
            return Outcome(tid, os.WTERMSIG(status), None)
        if os.WIFEXITED(status):
            detached = True
            return Outcome(tid, None, None)
        after = Regs()
        _ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(after))
        result = ctypes.c_longlong(after.rax).value
        # put the thread back where it was: the kernel restarts its interrupted futex wait
        _ptrace(PTRACE_SETREGS, tid, None, ctypes.addressof(saved))
        return Outcome(tid, None, result)
    finally:
        if not detached:
            try:
                _ptrace(PTRACE_DETACH, tid, None, None)
            except OSError:
                pass
