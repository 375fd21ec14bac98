"""A private node for the static-pod test: containerd (Debian) and kubelet (built from
k8s.io/kubernetes in tests/e2e), each with its own socket, config, state and root directories
under the test's work dir, so nothing of the host's /var/lib or /run/containerd is touched."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import yaml

from .image import REPO

E2E_DIR = os.path.join(REPO, "tests", "e2e")
K8S_VERSION = "v1.37.2"
VERSION_LDFLAGS = " ".join([
    "-s", "-w",
    f"-X k8s.io/component-base/version.gitVersion={K8S_VERSION}",
    "-X k8s.io/component-base/version.gitMajor=1",
    "-X k8s.io/component-base/version.gitMinor=37",
    "-X k8s.io/component-base/version.gitTreeState=clean",
])
PAUSE_REF = "localhost/trousseau-test-pause:1"

# The pod sandbox's process. containerd's CRI needs a sandbox image, and registry.k8s.io is not
# reachable here: this is the whole job of upstream's pause, written for this test.
PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, on_stop);
  signal(SIGTERM, on_stop);
  signal(SIGCHLD, on_child);
  for (;;) pause();
}
"""


def build_image_module():
    """scripts/build-image as a module (its deterministic tar and umoci steps)."""
    path = os.path.join(REPO, "scripts", "build-image")
    loader = importlib.machinery.SourceFileLoader("build_image", path)
    spec = importlib.util.spec_from_loader("build_image", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def go_build_kubelet(timeout: float) -> tuple[str, float]:
    """go build ./cmd/kubelet in tests/e2e (CGO_ENABLED=0, like the e2e binaries, so the Go
    cache is shared with kube-apiserver). Returns (path, seconds)."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = dict(os.environ, CGO_ENABLED="0")
    env["PATH"] = os.path.dirname(go) + os.pathsep + env.get("PATH", "")
    out = os.path.join(E2E_DIR, "bin", "kubelet")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen([go, "build", "-ldflags", VERSION_LDFLAGS, "-o", out, "./cmd/kubelet"],
                            cwd=E2E_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"go build ./cmd/kubelet did not finish within {timeout:.0f} s")
    if proc.returncode != 0:
        raise RuntimeError(f"go build ./cmd/kubelet exited {proc.returncode}:\n{text[-4000:]}")
    return out, time.monotonic() - start


def build_pause_image(work: str) -> str:
    """A one-file OCI archive: a static pause binary as the entrypoint."""
    bi = build_image_module()
    os.makedirs(work, exist_ok=True)
    src = os.path.join(work, "pause.c")
    with open(src, "w") as f:
        f.write(PAUSE_C)
    binary = os.path.join(work, "pause")
    bi.run(["cc", "-static", "-O2", "-o", binary, src])
    with open(binary, "rb") as f:
        data = f.read()
    layout = os.path.join(work, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    layer = os.path.join(work, "layer.tar")
    bi.write_tar(layer, [("pause", data, 0o755)], 0)
    img = f"{layout}:1"
    bi.run(["umoci", "init", "--layout", layout])
    bi.run(["umoci", "new", "--image", img])
    bi.run(["umoci", "raw", "add-layer", "--no-history", "--image", img, layer])
    bi.run(["umoci", "config", "--no-history", "--image", img, "--config.entrypoint", "/pause",
            "--config.user", "65535:65535", "--os", "linux", "--architecture", "amd64"])
    bi.run(["umoci", "gc", "--layout", layout])
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": PAUSE_REF,
                                            "io.containerd.image.name": PAUSE_REF}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    archive = os.path.join(work, "pause.oci.tar")
    bi.tar_directory(layout, archive, 0)
    return archive


def wait_for(pred, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


def can_lower_oom_score_adj() -> bool:
    """Whether this process may lower oom_score_adj (needs CAP_SYS_RESOURCE)."""
    with open("/proc/self/status") as f:
        eff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    return bool(eff & (1 << 24))


class Containerd:
    def __init__(self, work: str):
        self.work = work
        self.socket = os.path.join(work, "containerd.sock")
        self.config = os.path.join(work, "config.toml")
        self.log = os.path.join(work, "containerd.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        os.makedirs(self.work, exist_ok=True)
        w = self.work
        restrict_oom = not can_lower_oom_score_adj()
        with open(self.config, "w") as f:
            f.write(f"""version = 2
root = "{w}/root"
state = "{w}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_REF}"
  enable_selinux = false
  # This machine withholds CAP_SYS_RESOURCE even from root, so no process may lower its
  # oom_score_adj: the sandbox's -998 and a critical pod's -997 make runc fail ("failed to
  # update /proc/self/oom_score_adj: Permission denied"). Clamp them to containerd's own (the
  # setting exists for rootless containerd). Nothing else of the pod changes.
  restrict_oom_score_adj = {"true" if restrict_oom else "false"}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{w}/cni/bin"
    conf_dir = "{w}/cni/net.d"
""")
        self.proc = subprocess.Popen(["containerd", "--config", self.config],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(lambda: self.proc.poll() is None and self.ctr("version").returncode == 0,
                 timeout, "containerd answering on its socket")

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", self.socket, "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)

    def import_image(self, archive: str) -> str:
        r = self.ctr("images", "import", archive, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"ctr images import {archive}: {r.stderr}")
        return r.stdout

    def tasks(self) -> dict[str, tuple[int, str]]:
        """{container id: (host pid, status)}"""
        r = self.ctr("tasks", "ls")
        out = {}
        for line in r.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = (int(parts[1]), parts[2])
        return out

    def container_labels(self, cid: str) -> dict:
        r = self.ctr("containers", "info", cid)
        if r.returncode != 0:
            return {}
        return json.loads(r.stdout).get("Labels", {})

    def running_container(self, name: str) -> tuple[str, int] | None:
        """(id, host pid) of the running CRI container named `name`, or None."""
        for cid, (pid, status) in self.tasks().items():
            if status == "RUNNING" and self.container_labels(cid).get("io.kubernetes.container.name") == name:
                return cid, pid
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        # the pods first: shims and containers outlive containerd otherwise
        for cid, (pid, _) in self.tasks().items():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", cid, timeout=30)
        time.sleep(1)
        for cid in self.tasks():
            self.ctr("tasks", "delete", "--force", cid, timeout=30)
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Kubelet:
    def __init__(self, binary: str, work: str, runtime_socket: str, ports: tuple[int, int, int]):
        self.binary = binary
        self.work = work
        self.root = os.path.join(work, "root")
        self.manifests = os.path.join(work, "manifests")
        self.config = os.path.join(work, "kubelet-config.yaml")
        self.log = os.path.join(work, "kubelet.log")
        self.runtime_socket = runtime_socket
        self.port, self.read_only_port, self.healthz_port = ports
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> dict:
        cfg = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # this host has cgroup v1 controllers (plus a cgroup2 mount at /sys/fs/cgroup/unified)
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            # no kubepods/ QoS hierarchy in the shared host's cgroup tree
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "containerRuntimeEndpoint": "unix://" + self.runtime_socket,
            "staticPodPath": self.manifests,
            "podLogsDir": os.path.join(self.work, "pod-logs"),
            "fileCheckFrequency": "2s",
            "syncFrequency": "5s",
            "address": "127.0.0.1",
            "port": self.port,
            "readOnlyPort": self.read_only_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "failSwapOn": False,
            # a busy shared disk must not make the kubelet evict or garbage-collect our images
            "evictionHard": {"memory.available": "1Mi"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }
        with open(self.config, "w") as f:
            yaml.safe_dump(cfg, f)
        return cfg

    def start(self) -> None:
        os.makedirs(self.manifests, exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        self.write_config()
        cmd = [self.binary, "--config", self.config, "--root-dir", self.root,
               "--hostname-override", "trousseau-it-node", "--v", "2"]
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthz(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=3) as r:
            return r.status == 200

    def pods(self) -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.read_only_port}/pods", timeout=5) as r:
            return json.load(r)["items"]

    def container_status(self, pod_name: str, container: str) -> dict | None:
        for p in self.pods():
            if p["metadata"]["name"].startswith(pod_name):
                for cs in p.get("status", {}).get("containerStatuses", []) or []:
                    if cs["name"] == container:
                        return cs
        return None

    def log_text(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
