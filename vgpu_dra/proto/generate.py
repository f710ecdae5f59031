"""Regenerate the Python stubs from the vendored upstream .proto files.

    .venv/bin/python -m vgpu_dra.proto.generate            # rewrite the committed stubs
    .venv/bin/python -m vgpu_dra.proto.generate --out DIR  # write them under DIR instead

It runs, from the repository root (so imports come out as
`from vgpu_dra.proto.dra.v1 import api_pb2`):

    python -m grpc_tools.protoc -I . --python_out=OUT --pyi_out=OUT --grpc_python_out=OUT \\
        vgpu_dra/proto/pluginregistration/v1/api.proto \\
        vgpu_dra/proto/dra/v1/api.proto \\
        vgpu_dra/proto/dra/v1beta1/api.proto \\
        vgpu_dra/proto/dra_health/v1alpha1/api.proto \\
        vgpu_dra/proto/deviceplugin/v1beta1/api.proto

The output depends on the grpcio-tools version (it embeds the protobuf and grpcio versions it
was made with); `tests/unit/node_agent/test_proto_fresh.py` regenerates into a temporary
directory and fails if the committed files differ.

This is a developer tool: nothing in the plugin imports it at run time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parents[1]

# Relative to REPO_ROOT; the order is irrelevant to the output.
PROTO_FILES: tuple[str, ...] = (
    "vgpu_dra/proto/pluginregistration/v1/api.proto",
    "vgpu_dra/proto/dra/v1/api.proto",
    "vgpu_dra/proto/dra/v1beta1/api.proto",
    "vgpu_dra/proto/dra_health/v1alpha1/api.proto",
    "vgpu_dra/proto/deviceplugin/v1beta1/api.proto",
)

# What protoc writes for each .proto (suffixes replacing `.proto`).
GENERATED_SUFFIXES: tuple[str, ...] = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generated_files() -> list[str]:
    """The generated paths, relative to the output root, in a stable order."""
    return [p.removesuffix(".proto") + s for p in PROTO_FILES for s in GENERATED_SUFFIXES]


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Run protoc for every vendored .proto, writing stubs under `out_dir`.

    Returns the written files. Raises `RuntimeError` with protoc's stderr when protoc fails.
    Idempotent: the same inputs and grpcio-tools version give byte-identical files.
    """
    out = str(out_dir.resolve())
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *PROTO_FILES,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
    return [out_dir / f for f in generated_files()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: repo)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
