"""The Go build configuration shared by every `go build` and `go test` the integration tests
run (tests/conformance, tests/e2e: kube-apiserver, etcd, kubeadm, kubelet and the test binaries).

`-gcflags=all=-dwarf=false`: the compiler writes no DWARF into the packages it caches. The
binaries are linked with `-s -w` (no symbol table, no DWARF) anyway, and Go's own stack traces
(panics, `go test` failures) come from the pc-line tables, not from DWARF, so nothing is lost;
measured on a cold GOCACHE (`go build -p 1 k8s.io/client-go/kubernetes`, 575 packages):
185 -> 168 and 181 -> 155 CPU-s, and a quarter less cache on disk. A debugger (dlv) needs DWARF:
run `go` yourself, without this flag, for that.

The flag is part of every package's cache key: a `go` command run by hand in tests/e2e or
tests/conformance without it compiles everything once more. To share the cache, use
`GOFLAGS="$(go env GOFLAGS) -buildvcs=false -gcflags=all=-dwarf=false" CGO_ENABLED=0`.
"""
from __future__ import annotations

import os
import shutil
import subprocess

GCFLAGS = "-gcflags=all=-dwarf=false"
# No VCS stamp in the binaries: the tests/e2e builds need no git state, and a machine whose
# `go env` does not say so itself (a fresh one) then builds exactly what this one does.
BUILDVCS = "-buildvcs=false"


def configure(environ=os.environ) -> None:
    """Adds GCFLAGS and BUILDVCS to GOFLAGS in `environ` (keeping what `go env GOFLAGS` already
    has, e.g. from `go env -w`), each unless GOFLAGS already sets it: then the caller chose."""
    current = environ.get("GOFLAGS")
    if current is None:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        if not os.path.exists(go):
            return
        try:
            current = subprocess.run([go, "env", "GOFLAGS"], capture_output=True, text=True,
                                     timeout=60, stdin=subprocess.DEVNULL).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            current = ""
    flags = current
    if "-buildvcs" not in flags:
        flags = f"{flags} {BUILDVCS}"
    if "-gcflags" not in flags:
        flags = f"{flags} {GCFLAGS}"
    environ["GOFLAGS"] = flags.strip()
