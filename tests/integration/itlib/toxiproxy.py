"""toxiproxy (github.com/Shopify/toxiproxy, built by scripts/build-toxiproxy from the Go module
proxy at a pinned version, cached outside the tree): a real TCP fault proxy between the plugin
and OpenBao. TLS passes through it untouched; the toxics act on the TCP stream.

Loopback only: the API and every proxy listen on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from .plugin import free_port

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def toxiproxy_binary() -> str:
    """Builds (or reuses) toxiproxy-server and returns its path."""
    env = dict(os.environ)
    env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    r = subprocess.run([os.path.join(REPO_ROOT, "scripts", "build-toxiproxy"), "--path"],
                       capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"scripts/build-toxiproxy failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


class Toxiproxy:
    def __init__(self, workdir: str):
        self.binary = toxiproxy_binary()
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.log_file = os.path.join(workdir, "toxiproxy.log")
        self._log = open(self.log_file, "wb")
        self.proc = subprocess.Popen([self.binary, "-host", "127.0.0.1", "-port", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                self._call("GET", "/version")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"toxiproxy did not start; see {self.log_file}")
                time.sleep(0.1)

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def proxy(self, name: str, upstream_port: int) -> str:
        """Creates a proxy 127.0.0.1:<free> -> 127.0.0.1:upstream_port; returns the listen addr."""
        listen = f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen,
                                        "upstream": f"127.0.0.1:{upstream_port}",
                                        "enabled": True})
        return listen

    def add_toxic(self, proxy: str, name: str, type_: str, attributes: dict,
                  stream: str = "downstream", toxicity: float = 1.0) -> None:
        self._call("POST", f"/proxies/{proxy}/toxics",
                   {"name": name, "type": type_, "stream": stream, "toxicity": toxicity,
                    "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise

    def clear(self, proxy: str) -> None:
        for t in self._call("GET", f"/proxies/{proxy}/toxics") or []:
            self.remove_toxic(proxy, t["name"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
