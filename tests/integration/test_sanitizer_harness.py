"""The harness notices sanitizer reports in a plugin's stderr (conftest.PluginFactory.teardown),
without a plugin binary: a report must fail the test even when the plugin exited 0 or kept
running, and the plugin's own JSON log lines must never be mistaken for one."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import PluginFactory
from itlib.plugin import Plugin, sanitizer_report

REPORTS = {
    "tsan": "==================\nWARNING: ThreadSanitizer: data race (pid=4242)\n"
            "  Write of size 8 at 0x7b0400000010 by thread T3:\n    #0 f src/a.cpp:10\n",
    "asan": "=================================================================\n"
            "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n",
    "ubsan": "src/kms/x.cpp:12:7: runtime error: signed integer overflow: 2147483647 + 1\n",
    "lsan": "==4242==ERROR: LeakSanitizer: detected memory leaks\n",
    "tsan-fatal": "FATAL: ThreadSanitizer: unexpected memory mapping 0x7f0000000000\n",
}


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_each_sanitizer_report_is_found(kind):
    text = '{"level":"info","msg":"started"}\n' + REPORTS[kind] + '{"level":"info"}\n'
    found = sanitizer_report(text)
    assert found and found.splitlines()[0] in REPORTS[kind]


@pytest.mark.parametrize("line", [
    '{"level":"error","msg":"vault: runtime error: upstream said ThreadSanitizer"}',
    '{"type":"audit","uid":"AddressSanitizer: x"}',
    "plain text without a report",
    "",
])
def test_plugin_log_lines_are_not_reports(line):
    assert sanitizer_report(line + "\n") == ""


def test_teardown_fails_on_a_report_even_after_exit_0(tmp_path):
    pl = Plugin("/bin/true", str(tmp_path), "fake", {"socket": {"path": str(tmp_path / "s")}},
                None, None)
    pl.proc = subprocess.Popen(["/bin/true"])
    pl.proc.wait()
    pl.returncode = 0
    with open(pl.stderr_file, "w") as f:
        f.write('{"level":"info"}\n' + REPORTS["tsan"])
    f = PluginFactory.__new__(PluginFactory)
    f.started = [pl]
    problems = f.teardown()
    assert len(problems) == 1 and "ThreadSanitizer: data race" in problems[0], problems
    os.unlink(pl.stderr_file)
    open(pl.stderr_file, "w").close()
    assert f.teardown() == []
