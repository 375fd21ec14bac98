"""Issue 7 part 1: the container image (scripts/build-image) and its SBOM.

The image is built offline with umoci from the binary, the shared objects `ldd` lists and a
one-entry passwd/group; these tests read the OCI archive back and check it against the host's
own files and dpkg database, build it a second time for the same digest, and check that
manifests/trousseau.yaml names the image the build produces.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import subprocess

import pytest
import yaml

from itlib import image as imagelib
from itlib.image import sha256

REPO = imagelib.REPO
pytestmark = [pytest.mark.plugin]


@pytest.fixture(scope="module")
def image(plugin_bin, it_dir):
    return imagelib.built(plugin_bin, it_dir)


def binary_version(binary):
    first = subprocess.run([binary, "version"], capture_output=True, text=True,
                           check=True).stdout.splitlines()[0]
    m = re.fullmatch(r"trousseau (\S+) \(git (\S+)\)", first)
    assert m, first
    return m.group(1), m.group(2)


def ldd_paths(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = {}
    for line in out.splitlines():
        m = re.search(r"(?:=> )?(/\S+) \(0x", line)
        if m:
            paths[m.group(1)] = os.path.realpath(m.group(1))
    return paths


def commit_time():
    return int(subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%ct"], capture_output=True,
                              text=True, check=True).stdout)


def test_same_build_gives_the_same_digest(image, plugin_bin, it_dir):
    again = imagelib.build(plugin_bin, os.path.join(it_dir, "image-again"))
    print(f"\n[image] {image.ref} {image.digest}, archive {image.size} bytes; "
          f"builds took {image.build_seconds:.1f} s and {again.build_seconds:.1f} s")
    assert again.digest == image.digest
    with open(image.archive, "rb") as a, open(again.archive, "rb") as b:
        assert a.read() == b.read(), "the archives differ although the manifest digests agree"
    with open(image.sbom_path, "rb") as a, open(again.sbom_path, "rb") as b:
        assert a.read() == b.read()
    # a different SOURCE_DATE_EPOCH is a different image: the timestamps really are in it
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(commit_time() - 86400))
    other = imagelib.build(plugin_bin, os.path.join(it_dir, "image-other-epoch"), env)
    assert other.digest != image.digest


def test_archive_is_a_consistent_oci_layout(image):
    assert json.loads(image.blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, data in image.blobs.items():
        if name.startswith("blobs/sha256/"):
            assert sha256(data) == name.rsplit("/", 1)[1], f"{name} does not match its digest"
    (desc,) = image.index["manifests"]
    assert desc["digest"] == image.digest
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == image.ref
    assert image.config["rootfs"]["diff_ids"] == ["sha256:" + sha256(image.layer_tar)]
    assert len(image.manifest["layers"]) == 1, "one layer, no base image"


def test_image_config(image, plugin_bin):
    version, rev = binary_version(plugin_bin)
    cfg = image.config
    created = datetime.datetime.fromtimestamp(commit_time(), datetime.timezone.utc)
    assert cfg["created"] == created.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all(h["created"] == cfg["created"] for h in cfg["history"])
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"
    c = cfg["config"]
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == ["/usr/local/bin/trousseau"]
    assert c["Cmd"] == ["serve", "--config", "/etc/trousseau/config.yaml"]
    assert "Env" not in c, "nothing in the environment (no PATH: there is nothing to find on it)"
    assert c["Labels"]["org.opencontainers.image.version"] == version
    assert c["Labels"]["org.opencontainers.image.revision"] == rev


def test_image_holds_exactly_the_binary_its_shared_objects_and_one_account(image, plugin_bin):
    libs = ldd_paths(plugin_bin)
    want = {"/usr/local/bin/trousseau", "/etc/passwd", "/etc/group", *libs}
    assert set(image.files) == want
    for m in image.layer_members:
        assert m.isfile() or m.isdir(), f"{m.name}: only regular files and directories"
        assert (m.uid, m.gid, m.mtime) == (0, 0, commit_time()), m.name
    with open(plugin_bin, "rb") as f:
        assert image.files["/usr/local/bin/trousseau"] == f.read()
    for path, real in libs.items():
        with open(real, "rb") as f:
            assert image.files[path] == f.read(), f"{path} is not the host's {real}"
    assert "/lib64/ld-linux-x86-64.so.2" in image.files, "the loader at its PT_INTERP path"
    for absent in ("/bin/sh", "/usr/bin/dpkg", "/usr/bin/apt", "/bin/busybox"):
        assert absent not in image.files
    passwd = image.files["/etc/passwd"].decode().splitlines()
    group = image.files["/etc/group"].decode().splitlines()
    assert [line.split(":")[2:4] for line in passwd] == [["65532", "65532"]]
    assert [line.split(":")[2] for line in group] == ["65532"]


def test_sbom_lists_every_file_with_its_debian_package(image, plugin_bin):
    doc = image.sbom
    version, rev = binary_version(plugin_bin)
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["SPDXID"] == "SPDXRef-DOCUMENT" and doc["documentNamespace"].startswith("https://")
    assert image.digest in doc["documentNamespace"]
    assert doc["creationInfo"]["created"] == image.config["created"]
    ids = [e["SPDXID"] for e in doc["packages"] + doc["files"]]
    assert len(ids) == len(set(ids)), "SPDX ids are unique"

    # every file in the image is in the SBOM with its sha256, and nothing else is
    by_id = {f["SPDXID"]: f for f in doc["files"]}
    listed = {f["fileName"].lstrip("."): f for f in doc["files"]}
    assert set(listed) == set(image.files)
    for path, data in image.files.items():
        sums = {c["algorithm"]: c["checksumValue"] for c in listed[path]["checksums"]}
        assert sums["SHA256"] == sha256(data), path
        assert sums["SHA1"] == hashlib.sha1(data).hexdigest(), path

    # every file belongs to exactly one package
    owner = {}
    for p in doc["packages"]:
        for fid in p.get("hasFiles", []):
            assert fid in by_id, f"{p['name']} names an unknown file {fid}"
            assert fid not in owner, f"{fid} in two packages"
            owner[fid] = p
        if p.get("filesAnalyzed"):
            sha1s = sorted(next(c["checksumValue"] for c in by_id[f]["checksums"]
                                if c["algorithm"] == "SHA1") for f in p["hasFiles"])
            assert p["packageVerificationCode"]["packageVerificationCodeValue"] == \
                hashlib.sha1("".join(sha1s).encode()).hexdigest(), p["name"]
    assert set(owner) == set(by_id)

    # the Debian packages and versions are the ones dpkg says installed each file
    libs = ldd_paths(plugin_bin)
    debs = 0
    for path, real in libs.items():
        p = owner[listed[path]["SPDXID"]]
        r = subprocess.run(["dpkg", "-S", real], capture_output=True, text=True)
        if r.returncode != 0:      # merged /usr: registered under the other spelling
            r = subprocess.run(["dpkg", "-S", real.removeprefix("/usr")], capture_output=True, text=True)
        pkg = r.stdout.split(":")[0]
        ver = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                             text=True, check=True).stdout
        assert (p["name"], p["versionInfo"]) == (pkg, ver), path
        assert p["externalRefs"][0]["referenceLocator"].startswith(f"pkg:deb/debian/{pkg}@")
    debs = len({owner[listed[p]["SPDXID"]]["name"] for p in libs})

    # the plugin itself: its version and git revision; it also owns the generated passwd/group
    own = owner[listed["/usr/local/bin/trousseau"]["SPDXID"]]
    assert (own["name"], own["versionInfo"]) == ("trousseau", version)
    assert rev in own["sourceInfo"]
    assert owner[listed["/etc/passwd"]["SPDXID"]] is own
    (img,) = [p for p in doc["packages"] if p["SPDXID"] in doc["documentDescribes"]]
    assert img["name"] == image.ref and img["checksums"][0]["checksumValue"] == image.digest[7:]
    contains = {r["relatedSpdxElement"] for r in doc["relationships"]
                if r["spdxElementId"] == img["SPDXID"] and r["relationshipType"] == "CONTAINS"}
    assert contains == {p["SPDXID"] for p in doc["packages"] if p is not img}
    print(f"\n[image] SBOM: {len(doc['packages'])} packages ({debs} Debian, trousseau, the image), "
          f"{len(doc['files'])} files")


def test_manifest_names_the_image_the_build_makes(image, plugin_bin):
    version, _ = binary_version(plugin_bin)
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        m = re.search(r"project\(trousseau VERSION (\S+)", f.read())
    assert m and m.group(1) == version, "the binary prints the CMake project VERSION"
    assert image.ref == f"localhost/trousseau:{version}"
    with open(os.path.join(REPO, "manifests", "trousseau.yaml")) as f:
        pod = yaml.safe_load(f)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image.ref
    assert container["imagePullPolicy"] == "IfNotPresent", "no registry: the image is imported"


def test_build_image_refuses_bad_input(it_dir, plugin_bin, tmp_path):
    def run(*args, env=None):
        return subprocess.run([imagelib.BUILD_IMAGE, *args], capture_output=True, text=True,
                              timeout=120, env=env)
    r = run("--binary", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not an executable file" in r.stderr
    fake = tmp_path / "fake"
    fake.write_text("#!/bin/sh\necho 'something else 1.0'\n")
    fake.chmod(0o755)
    r = run("--binary", str(fake), "--out", str(tmp_path / "o"))
    # refused before anything is built: not our binary (the TLS flavor check comes first)
    assert r.returncode == 2 and ("unexpected first line" in r.stderr or
                                  "no tls line" in r.stderr), r.stderr
    r = run("--binary", plugin_bin, "--out", str(tmp_path / "o"),
            env=dict(os.environ, SOURCE_DATE_EPOCH="yesterday"))
    assert r.returncode == 2 and "SOURCE_DATE_EPOCH" in r.stderr
    assert not os.path.exists(tmp_path / "o" / "trousseau-0.1.0.oci.tar")
