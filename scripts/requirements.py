"""Print pinned requirements from pyproject.toml, one per line, for installs that must not build the
project itself (the container images' dependency layer).

    python scripts/requirements.py                 # the runtime dependencies
    python scripts/requirements.py --only NAME...  # just these, from any dependency list (e.g. grpcio-tools)
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


def requirements(only: list[str] | None = None) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    if not only:
        return list(project["dependencies"])
    everything = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        everything.extend(r for r in extra if not r.startswith(project["name"]))
    wanted = {name.lower() for name in only}
    found = [r for r in everything if _name(r) in wanted]
    missing = wanted - {_name(r) for r in found}
    if missing:
        raise SystemExit(f"not in pyproject.toml: {', '.join(sorted(missing))}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME")
    args = parser.parse_args()
    print("\n".join(requirements(args.only)))


if __name__ == "__main__":
    main()
