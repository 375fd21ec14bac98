#!/usr/bin/env python3
"""The Vault path in instructions: `trousseau serve` and the bench's minimal Vault client (the
`floor` contender) under `valgrind --tool=callgrind`, against one real OpenBao over mutual TLS,
at c=1 (docs/performance.md, "Change 17").

Each side runs twice, with N and 2N Encrypt+Decrypt round trips after the same warm-up; the
difference of the two profiles divided by 2N is the steady-state cost of one KMS call (plugin) or
one Transit call (floor client): start-up, the handshake and shutdown cancel out.

  bench/callgrind_vault_path.py [--plugin-bin B] [--bench-bin B] [--n N] [--out DIR] [--no-floor]
                                [--tunables GLIBC_TUNABLES]

Under valgrind the plugin runs with GLIBC_TUNABLES=glibc.malloc.tcache_count=0 already set, so
serve's re-exec (src/kms/malloc_env.cpp) finds nothing to change and does not happen: the process
profiled has the same malloc settings as in production. `seccomp.mode: disabled` (valgrind makes
syscalls of its own that the filter refuses; the filter runs in the kernel, which callgrind does
not count anyway). Everything else is bench/harness.py's plugin config.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from itlib import stubs  # noqa: E402
from itlib.plugin import Plugin  # noqa: E402

import harness  # noqa: E402

WARMUP = 20

# Inclusive components, matched against callgrind_annotate's function names (first match wins
# for the label; a function counts in every component it matches). Inclusive costs overlap:
# curl_easy_perform contains OpenSSL's record layer and part of malloc.
COMPONENTS = [
    ("gRPC sync server: request run (whole KMS call)", r"^grpc::Server::SyncRequest::ContinueRunAfterInterception\("),
    ("our handler: V2Service::Encrypt + ::Decrypt", r"^trousseau::kms::V2Service::(Encrypt|Decrypt)\("),
    ("TransitClient::Call (one Vault request)", r"^trousseau::vault::TransitClient::Call\("),
    ("CallRecord end (audit, metrics, ScrubStack)", r"CallRecord::~CallRecord\(\)$"),
    ("status loop thread (timer-driven)", r"^trousseau::kms::StatusLoop::Run\(\)$"),
    ("libcurl: curl_easy_perform", r"^curl_easy_perform$"),
    ("libcurl: multi_done (frees the upload buffer)", r"^multi_done$"),
    ("OpenSSL: CRYPTO_free (record buffers released)", r"^CRYPTO_free$"),
    ("OpenSSL: SSL_write", r"^SSL_write$"),
    ("OpenSSL: SSL_read", r"^SSL_read$"),
    ("malloc", r"^malloc$"),
    ("free (incl. wipe-on-free)", r"^free$"),
    ("realloc", r"^realloc$"),
    ("calloc", r"^calloc$"),
    ("explicit_bzero / memset", r"^(explicit_bzero|__memset_avx2_unaligned_erms|memset)$"),
    ("OPENSSL_cleanse", r"^OPENSSL_cleanse$"),
    ("ScrubStack", r"ScrubStack"),
    ("curl_easy_setopt", r"^curl_easy_setopt$"),
    ("token source", r"TokenFileSource::"),
    ("JSON: ParseSecret", r"ParseSecret"),
    ("JSON: nlohmann parser (any)", r"^bool nlohmann::.*detail::parser<.*>::sax_parse_internal<"),
    ("JSON: DumpSecret", r"DumpSecret"),
    ("audit log", r"[Aa]udit"),
    ("metrics (prometheus)", r"^prometheus::"),
]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def valgrind(out: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, "--dump-instr=no", "--vgdb=no"]


def roundtrips(bench_bin: str, args: list[str], n: int, wrap: list[str] | None = None) -> None:
    cmd = (wrap or []) + [bench_bin] + args + ["--op", "roundtrip", "--n", str(n),
                                               "--concurrency", "1", "--warmup", str(WARMUP),
                                               "--json"]
    run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=3600)


def profile_plugin(bao, args, work: str, n: int, tag: str) -> str:
    out = os.path.join(work, f"plugin-{tag}.cg")
    wrapper = os.path.join(work, f"plugin-{tag}.sh")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexport GLIBC_TUNABLES={args.tunables}\n"
                f"exec {' '.join(valgrind(out))} {args.plugin_bin} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    # valgrind creates the file as root at start and writes it at exit, after the plugin dropped
    # to its uid: the file must already be that uid's.
    open(out, "w").close()
    if os.geteuid() == 0:
        os.chown(out, harness.PLUGIN_UID, harness.PLUGIN_GID)
    sock = os.path.join(work, "run", f"p-{tag}.sock")
    cfg = harness.merge(harness.plugin_config(bao, sock), {"seccomp": {"mode": "disabled"}})
    v2, v1 = stubs.generate(os.path.join(work, "stubs"))
    p = Plugin(wrapper, work, f"plugin-{tag}", cfg, v2, v1)
    try:
        harness.start_plugin(p, ready_s=300.0, healthz_s=120.0)
        roundtrips(args.bench_bin, ["plugin", "--socket", sock], n)
    finally:
        if p.proc is not None and p.proc.poll() is None:
            p.terminate(timeout=300.0)
    return out


def profile_floor(bao, args, work: str, n: int, tag: str) -> str:
    out = os.path.join(work, f"floor-{tag}.cg")
    pki = bao.pki
    roundtrips(args.bench_bin, ["vault", "--addr", bao.addr, "--ca", pki.ca_file,
                                "--cert", pki.client_cert_file, "--key", pki.client_key_file,
                                "--token-file", bao.token_file, "--mount", bao.mount,
                                "--key-name", bao.key], n, wrap=valgrind(out))
    return out


def inclusive(cg: str) -> tuple[int, dict[str, int]]:
    """Total Ir and inclusive Ir per function (the `*` line of each block of callgrind_annotate
    --tree=caller --inclusive=yes: recursion not counted twice)."""
    txt = run(["callgrind_annotate", "--tree=caller", "--inclusive=yes", "--threshold=100", cg],
              capture_output=True, text=True).stdout
    total = 0
    funcs: dict[str, int] = {}
    for line in txt.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\*\s+)?(.*)$", line)
        if not m:
            continue
        ir, star, rest = int(m.group(1).replace(",", "")), m.group(2), m.group(3)
        if rest.startswith("PROGRAM TOTALS"):
            total = ir
            continue
        if not star or ":" not in rest:
            continue
        name = re.sub(r"\s+\[[^\]]*\]$", "", rest).split(":", 1)[1].strip()
        # Recursion shows as name'2: the outer instance already includes it.
        if re.search(r"'\d+$", name):
            continue
        # callgrind_annotate may print a block's `*` line twice, and a name can stand for two
        # functions (our free() and libc's, which it calls): keep the largest, the outermost.
        funcs[name] = max(funcs.get(name, 0), ir)
    return total, funcs


def per_call(small: str, big: str, calls: int) -> tuple[float, dict[str, float]]:
    t1, f1 = inclusive(small)
    t2, f2 = inclusive(big)
    funcs = {k: (f2.get(k, 0) - f1.get(k, 0)) / calls for k in set(f1) | set(f2)}
    return (t2 - t1) / calls, funcs


def components(funcs: dict[str, float]) -> dict[str, float]:
    """Each component's inclusive cost: the largest matching function's (the outermost one), or
    the sum when the label says "+" (Encrypt and Decrypt are separate functions)."""
    out = {}
    for label, pat in COMPONENTS:
        rx = re.compile(pat)
        vals = [v for k, v in funcs.items() if rx.search(k)]
        out[label] = (sum(vals) if " + " in label else max(vals)) if vals else 0.0
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plugin-bin", default=os.path.join(REPO, "build", "release", "src", "trousseau"))
    ap.add_argument("--bench-bin", default=os.path.join(REPO, "build", "release", "bench", "trousseau-bench"))
    ap.add_argument("--n", type=int, default=200, help="round trips of the short run (default 200)")
    ap.add_argument("--out", default="", help="keep the profiles here (default: a temp dir, removed)")
    ap.add_argument("--no-floor", action="store_true")
    ap.add_argument("--tunables", default="glibc.malloc.tcache_count=0",
                    help="GLIBC_TUNABLES for the plugin (default: serve's own, so no re-exec); one "
                         "that names glibc.malloc.tcache_count is also what serve keeps")
    ap.add_argument("--top", type=int, default=40, help="functions listed per side")
    args = ap.parse_args()
    # valgrind and the plugin start in other directories: a relative path would not be found.
    args.plugin_bin, args.bench_bin = os.path.abspath(args.plugin_bin), os.path.abspath(args.bench_bin)
    work = tempfile.mkdtemp(prefix="trousseau-cg-")
    os.chmod(work, 0o777)  # the plugin drops to 65532 and writes its profile at exit
    harness.make_run_dir(os.path.join(work, "run"))
    bao = harness.new_openbao(work)
    sides = {}
    try:
        bao.setup()
        n, calls = args.n, 2 * args.n  # calls = the extra KMS/Transit calls of the 2N run
        a = profile_plugin(bao, args, work, n, "n")
        b = profile_plugin(bao, args, work, 2 * n, "2n")
        sides["plugin"] = per_call(a, b, calls)
        if not args.no_floor:
            a = profile_floor(bao, args, work, n, "n")
            b = profile_floor(bao, args, work, 2 * n, "2n")
            sides["floor"] = per_call(a, b, calls)
    finally:
        bao.stop()
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            for f in os.listdir(work):
                if f.endswith(".cg") or f.endswith(".err"):
                    shutil.copy(os.path.join(work, f), args.out)
        shutil.rmtree(work, ignore_errors=True)
    print(f"instructions per call (steady state: ({2 * args.n} − {args.n} round trips) × 2 calls), c=1")
    comps = {s: components(f) for s, (t, f) in sides.items()}
    print(f"{'component (inclusive)':58s} " + " ".join(f"{s:>12s}" for s in sides))
    print(f"{'TOTAL (whole process)':58s} " + " ".join(f"{sides[s][0]:12,.0f}" for s in sides))
    for label, _ in COMPONENTS:
        print(f"{label:58s} " + " ".join(f"{comps[s][label]:12,.0f}" for s in sides))
    for s, (t, f) in sides.items():
        print(f"\n{s}: top {args.top} functions, inclusive Ir per call")
        for k, v in sorted(f.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"{v:12,.0f}  {k[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
