"""The container image built by scripts/build-image, read back from its OCI archive."""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD_IMAGE = os.path.join(REPO, "scripts", "build-image")


@dataclass
class Image:
    out_dir: str
    ref: str
    digest: str
    archive: str
    sbom_path: str
    build_seconds: float
    stdout: str

    @functools.cached_property
    def blobs(self) -> dict[str, bytes]:
        """Every file of the archive by name (index.json, oci-layout, blobs/sha256/<hex>)."""
        with tarfile.open(self.archive) as tf:
            return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}

    def blob(self, digest: str) -> bytes:
        return self.blobs["blobs/sha256/" + digest.split(":", 1)[1]]

    @functools.cached_property
    def index(self) -> dict:
        return json.loads(self.blobs["index.json"])

    @functools.cached_property
    def manifest(self) -> dict:
        return json.loads(self.blob(self.index["manifests"][0]["digest"]))

    @functools.cached_property
    def config(self) -> dict:
        return json.loads(self.blob(self.manifest["config"]["digest"]))

    @functools.cached_property
    def layer_tar(self) -> bytes:
        (layer,) = self.manifest["layers"]
        return gzip.decompress(self.blob(layer["digest"]))

    @functools.cached_property
    def layer_members(self) -> list[tarfile.TarInfo]:
        with tarfile.open(fileobj=io.BytesIO(self.layer_tar)) as tf:
            return tf.getmembers()

    @functools.cached_property
    def files(self) -> dict[str, bytes]:
        """Regular files of the image by absolute path."""
        with tarfile.open(fileobj=io.BytesIO(self.layer_tar)) as tf:
            return {"/" + m.name.lstrip("./"): tf.extractfile(m).read()
                    for m in tf.getmembers() if m.isfile()}

    @functools.cached_property
    def sbom(self) -> dict:
        with open(self.sbom_path) as f:
            return json.load(f)

    @property
    def size(self) -> int:
        return os.path.getsize(self.archive)


def build(binary: str, out_dir: str, env: dict | None = None) -> Image:
    start = time.monotonic()
    r = subprocess.run([BUILD_IMAGE, "--binary", binary, "--out", out_dir], capture_output=True,
                       text=True, timeout=600, env=env)
    secs = time.monotonic() - start
    if r.returncode != 0:
        raise AssertionError(f"scripts/build-image exited {r.returncode}:\n{r.stdout}{r.stderr}")
    (archive,) = [f for f in os.listdir(out_dir) if f.endswith(".oci.tar")]
    base = os.path.join(out_dir, archive[: -len(".oci.tar")])
    with open(base + ".ref") as f:
        ref = f.read().strip()
    with open(base + ".digest") as f:
        digest = f.read().strip()
    return Image(out_dir, ref, digest, base + ".oci.tar", base + ".spdx.json", secs, r.stdout)


_cache: dict[tuple[str, str], Image] = {}


def built(binary: str, it_dir: str) -> Image:
    """One build per binary and session, shared by the tests that need the image."""
    key = (binary, it_dir)
    if key not in _cache:
        _cache[key] = build(binary, os.path.join(it_dir, "image"))
        print(f"\n[image] scripts/build-image: {_cache[key].build_seconds:.1f} s")
    return _cache[key]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
