"""Generates the Python gRPC stubs from /work/main/proto at test time and imports them.

kms_v2.proto and kms_v1beta1.proto both define EncryptRequest, DecryptRequest, ... in different
proto packages (v2, v1beta1). The generated modules have distinct file names (kms_v2_pb2,
kms_v1beta1_pb2) and register distinct full names (v2.EncryptRequest, v1beta1.EncryptRequest),
so both load into the same descriptor pool; tests use them through the two namespaces below.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PROTO_DIR = os.path.join(REPO_ROOT, "proto")


def generate(out_dir: str) -> tuple[types.SimpleNamespace, types.SimpleNamespace]:
    """Runs grpc_tools.protoc into out_dir and returns (v2, v1beta1) namespaces with
    `pb2` (messages) and `grpc` (stubs) attributes."""
    from grpc_tools import protoc
    import grpc_tools

    os.makedirs(out_dir, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for name in ("kms_v2.proto", "kms_v1beta1.proto"):
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(PROTO_DIR, name),
        ])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {name} (exit {rc})")
    # the generated *_pb2_grpc modules import their *_pb2 siblings by top-level name
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    v2 = types.SimpleNamespace(
        pb2=importlib.import_module("kms_v2_pb2"),
        grpc=importlib.import_module("kms_v2_pb2_grpc"))
    v1 = types.SimpleNamespace(
        pb2=importlib.import_module("kms_v1beta1_pb2"),
        grpc=importlib.import_module("kms_v1beta1_pb2_grpc"))
    assert v2.pb2.EncryptRequest.DESCRIPTOR.full_name == "v2.EncryptRequest"
    assert v1.pb2.EncryptRequest.DESCRIPTOR.full_name == "v1beta1.EncryptRequest"
    return v2, v1
