"""The committed gRPC code is what protos/ generates: regenerated into a temporary directory with the pinned
grpcio-tools (scripts/gen_protos.py, in this process) and compared file by file, both ways."""

from __future__ import annotations

import difflib
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "services"


def _gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}


def differences(generated: Path, committed: Path, packages: list[Path]) -> list[str]:
    """What differs between the generated and the committed copy of each generated package (a directory
    relative to both roots): files missing on either side, and the first lines that differ."""
    found: list[str] = []
    for package in packages:
        new, old = generated / package, committed / package
        for name in sorted(_files(new) | _files(old)):
            path = package / name
            if not (old / name).is_file():
                found.append(f"{path}: generated but not committed")
            elif not (new / name).is_file():
                found.append(f"{path}: committed but no longer generated")
            else:
                want = (new / name).read_text(encoding="utf-8").splitlines()
                have = (old / name).read_text(encoding="utf-8").splitlines()
                if want != have:
                    diff = list(difflib.unified_diff(have, want, "committed", "generated", n=0, lineterm=""))
                    found.append(f"{path}:\n" + "\n".join(diff[:12]))
    return found


def generate(target: Path) -> list[Path]:
    """Generate into target; the generated packages (one per proto directory), relative to target."""
    gen = _gen_protos()
    gen.generate(target)
    return sorted({p.relative_to(gen.PROTO_ROOT).parent for p in gen.proto_files()})


def test_the_committed_grpc_code_is_what_protos_generate(tmp_path: Path) -> None:
    packages = generate(tmp_path)
    assert packages == [Path("docjobs/v1")]
    found = differences(tmp_path, COMMITTED, packages)
    assert not found, "run `make proto` and commit the result:\n" + "\n".join(found)


def test_the_comparison_sees_a_changed_a_missing_and_an_extra_file(tmp_path: Path) -> None:
    generated, committed = tmp_path / "generated", tmp_path / "committed"
    packages = generate(generated)
    shutil.copytree(generated, committed)
    assert differences(generated, committed, packages) == []
    package = committed / packages[0]
    stub = package / "jobstore_pb2.pyi"
    stub.write_text(stub.read_text(encoding="utf-8").replace("class Job(", "class Jobb(", 1), encoding="utf-8")
    (package / "jobstore_pb2_grpc.py").unlink()
    (package / "retired_pb2.py").write_text("# generated from a proto that is gone\n", encoding="utf-8")
    found = differences(generated, committed, packages)
    assert [line.split(":")[0] for line in found] == [
        "docjobs/v1/jobstore_pb2.pyi", "docjobs/v1/jobstore_pb2_grpc.py", "docjobs/v1/retired_pb2.py"]
    assert "-class Jobb(" in found[0] and "+class Job(" in found[0]
