"""Generate the Python gRPC code from protos/ into a target directory (default: services/).

protoc writes the messages (`*_pb2.py` and their `.pyi`) and the gRPC classes (`*_pb2_grpc.py`); mypy-protobuf's
protoc-gen-mypy_grpc writes the `*_pb2_grpc.pyi` that types them (grpcio-tools writes none), so that a stub
made on a grpc.aio channel is typed as an async stub, and mypy reads the stubs, never the generated `.py`.

The generated modules are committed; tests/test_protos_generated.py regenerates them into a temporary
directory and fails when the committed copy differs, so protos/ stays the one source.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ]
    # The plugin is a console script of the dev extras, beside this interpreter. The image build installs
    # grpcio-tools alone and needs no stubs; a checkout without the plugin fails the generated-code test.
    mypy_grpc = Path(sys.executable).with_name("protoc-gen-mypy_grpc")
    if mypy_grpc.is_file():
        args += [f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}", f"--mypy_grpc_out={out_dir}", "--mypy_grpc_opt=quiet"]
    else:
        print(f"{mypy_grpc.name} not installed: the *_pb2_grpc.pyi stubs are left as they are", file=sys.stderr)
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every generated directory must be a regular package.
    for proto in proto_files():
        package_dir = out_dir / proto.relative_to(PROTO_ROOT).parent
        while package_dir != out_dir:
            (package_dir / "__init__.py").touch()
            package_dir = package_dir.parent


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "services")
