"""Starts the real `trousseau serve` binary with a YAML config built from a dict."""
from __future__ import annotations

import copy
import functools
import os
import re
import signal
import socket
import stat
import subprocess
import time
from typing import Any

import grpc
import yaml

DEFAULT_BIN = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                           "build", "release", "src", "trousseau"))


def plugin_binary() -> str:
    return os.environ.get("TROUSSEAU_BIN", DEFAULT_BIN)


@functools.lru_cache(maxsize=None)
def sanitizer_of(binary: str) -> str:
    """"address,undefined", "thread" or "" for a plain build: which sanitizer runtime the binary
    links (GCC links libasan/libubsan/libtsan dynamically). TROUSSEAU_SANITIZER overrides."""
    forced = os.environ.get("TROUSSEAU_SANITIZER")
    if forced is not None:
        return forced
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    found = [name for lib, name in (("libasan.so", "address"), ("libubsan.so", "undefined"),
                                    ("libtsan.so", "thread")) if lib in out]
    return ",".join(found)


# A sanitizer report in the plugin's stderr (the plugin's own log lines are JSON objects and
# never match): ASan/LSan/TSan headers and summaries, TSan's fatal errors, UBSan's
# "file:line:col: runtime error: ...".
_SANITIZER_LINE = re.compile(
    r"^(?!\{).*(?:(?:Address|Leak|Thread|UndefinedBehavior|Memory)Sanitizer[: ]|"
    r": runtime error: )", re.M)


def sanitizer_report(text: str, context: int = 40) -> str:
    """The first sanitizer report in text (that line and up to `context` lines after), or ""."""
    m = _SANITIZER_LINE.search(text)
    if not m:
        return ""
    lines = text[m.start():].splitlines()
    return "\n".join(lines[:context + 1])


class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()  # use as a value in overrides to remove a key from the default config

CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if v is DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class PluginError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (the kernel's choice; closed before returning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plugin:
    """One `trousseau serve` process. Output goes to <name>.out / <name>.err in the work dir."""

    def __init__(self, binary: str, workdir: str, name: str, config: dict, v2, v1):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        # The operations listener defaults to 127.0.0.1:8787: give every plugin its own port, so
        # plugins started side by side (HA tests, bench) never collide. Tests that set
        # http.listen themselves keep theirs.
        if "http" not in config:
            config = merge(config, {"http": {"listen": f"127.0.0.1:{free_port()}"}})
        self.config = config
        listen = str(config.get("http", {}).get("listen", ""))
        self.http_port: int | None = (int(listen.rsplit(":", 1)[1])
                                      if listen not in ("", "off") and ":" in listen else None)
        self.v2mod = v2
        self.v1mod = v1
        self.config_file = os.path.join(workdir, f"{name}.yaml")
        self.stdout_file = os.path.join(workdir, f"{name}.out")
        self.stderr_file = os.path.join(workdir, f"{name}.err")
        self.socket_path = config.get("socket", {}).get("path", "")
        self.proc: subprocess.Popen | None = None
        self.stderr_pipe = None  # the read end when spawned with stderr_pipe=True (nobody reads)
        self.returncode: int | None = None
        self._channel: grpc.Channel | None = None
        with open(self.config_file, "w") as f:
            yaml.safe_dump(config, f, default_flow_style=False, sort_keys=False)
        os.chmod(self.config_file, 0o644)

    # ---------------------------------------------------------------- process
    def spawn(self, stderr_pipe: bool = False) -> None:
        """Starts the process. With stderr_pipe, stderr is a pipe that nobody reads until the
        test calls drain_stderr() (a stalled kubelet log reader)."""
        out = open(self.stdout_file, "wb")
        err = subprocess.PIPE if stderr_pipe else open(self.stderr_file, "wb")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--config", self.config_file],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir,
                start_new_session=True)
        finally:
            out.close()
            if not stderr_pipe:
                err.close()
        if stderr_pipe:
            self.stderr_pipe = self.proc.stderr

    def drain_stderr(self):
        """Starts copying the stderr pipe to <name>.err in a thread; returns the thread (it
        ends when the process closes its stderr)."""
        import threading
        assert self.stderr_pipe is not None, "spawned without stderr_pipe"
        pipe = self.stderr_pipe

        def copy() -> None:
            with open(self.stderr_file, "ab") as f:
                while True:
                    chunk = pipe.read1(65536)
                    if not chunk:
                        break
                    f.write(chunk)
                    f.flush()
            pipe.close()

        t = threading.Thread(target=copy, daemon=True)
        t.start()
        return t

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 15.0) -> "Plugin":
        """Waits until the socket answers a v2 Status call (any healthz)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.running():
                raise PluginError(f"{self.name} exited with {self.proc.returncode} before serving:\n"
                                  f"{self.output_text()}")
            if os.path.exists(self.socket_path):
                ch = grpc.insecure_channel("unix:" + self.socket_path, options=CHANNEL_OPTIONS)
                try:
                    self.v2mod.grpc.KeyManagementServiceStub(ch).Status(
                        self.v2mod.pb2.StatusRequest(), timeout=1.0)
                    return self
                except grpc.RpcError as e:
                    last = e
                finally:
                    ch.close()
            time.sleep(0.05)
        raise PluginError(f"{self.name} did not answer Status within {timeout}s (last: {last}):\n"
                          f"{self.output_text()}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise PluginError(f"{self.name} still running after {timeout}s (killed):\n"
                              f"{self.output_text()}")
        return self.returncode

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL and raise if it hangs)."""
        self.close_channel()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        self.close_channel()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    # ---------------------------------------------------------------- gRPC
    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel("unix:" + self.socket_path,
                                                  options=CHANNEL_OPTIONS)
        return self._channel

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def v2(self):
        return self.v2mod.grpc.KeyManagementServiceStub(self.channel)

    @property
    def v1(self):
        return self.v1mod.grpc.KeyManagementServiceStub(self.channel)

    def status(self, timeout: float = 3.0):
        return self.v2.Status(self.v2mod.pb2.StatusRequest(), timeout=timeout)

    def encrypt(self, plaintext: bytes, uid: str = "it", timeout: float = 5.0):
        return self.v2.Encrypt(self.v2mod.pb2.EncryptRequest(plaintext=plaintext, uid=uid),
                               timeout=timeout)

    def decrypt(self, ciphertext: bytes, key_id: str = "", annotations: dict | None = None,
                uid: str = "it", timeout: float = 5.0):
        return self.v2.Decrypt(self.v2mod.pb2.DecryptRequest(
            ciphertext=ciphertext, uid=uid, key_id=key_id, annotations=annotations or {}),
            timeout=timeout)

    def v1_encrypt(self, plain: bytes, timeout: float = 5.0):
        return self.v1.Encrypt(self.v1mod.pb2.EncryptRequest(version="v1beta1", plain=plain),
                               timeout=timeout)

    def v1_decrypt(self, cipher: bytes, timeout: float = 5.0):
        return self.v1.Decrypt(self.v1mod.pb2.DecryptRequest(version="v1beta1", cipher=cipher),
                               timeout=timeout)

    def wait_healthz(self, predicate, timeout: float, what: str):
        """Polls Status (bounded) until predicate(response) holds; returns the response."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.status(timeout=1.0)
                if predicate(last):
                    return last
            except grpc.RpcError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: Status did not reach {what} within {timeout}s; "
                             f"last: {last}")

    # ---------------------------------------------------------------- output
    def stderr_text(self) -> str:
        try:
            with open(self.stderr_file, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def settled_stderr_text(self, quiet: float = 0.2, timeout: float = 3.0) -> str:
        """stderr once it stopped growing for `quiet` seconds (bounded by `timeout`). Log lines
        and audit records are written by the plugin's writer thread shortly after the call
        that logged them returned, so read this before counting records of a running plugin."""
        deadline = time.monotonic() + timeout
        last = -1
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                size = os.path.getsize(self.stderr_file)
            except OSError:
                size = 0
            if size != last:
                last, stable_since = size, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
            time.sleep(0.05)
        return self.stderr_text()

    def sanitizer_report(self) -> str:
        """The first sanitizer report in this plugin's stderr so far, or "" (also while it
        keeps running: UBSan and TSan with halt_on_error=0 report and continue)."""
        return sanitizer_report(self.stderr_text())

    def stdout_text(self) -> str:
        try:
            with open(self.stdout_file, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def output_text(self, limit: int = 20000) -> str:
        text = f"--- {self.name} stderr ---\n{self.stderr_text()}\n--- {self.name} stdout ---\n" \
               f"{self.stdout_text()}"
        if len(text) > limit:
            text = "... (cut) ...\n" + text[-limit:]
        return text

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """The plugin's /metrics as {'name{labels}': value}, labels as printed. Counters read
        here are the plugin's own observable behaviour, not its log text."""
        import urllib.request
        if not self.http_port:
            raise PluginError(f"{self.name}: no http.listen port, so no /metrics")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics",
                                    timeout=timeout) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include all of `labels` (0 if none)."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def socket_is_socket(self) -> bool:
        try:
            return stat.S_ISSOCK(os.lstat(self.socket_path).st_mode)
        except FileNotFoundError:
            return False
