"""Unpack the wheels carried to a machine without a package index, for the packages it lacks.

``gpu_check.sh`` runs this when ``.gpu_carry/wheels`` exists (``gpu_prepare.sh`` fills it where pip works): for each
requirement of ``benchmarks/gpu_carry.txt`` whose distribution is not installed here, the carried wheel that meets it
(and that this interpreter can install) is unpacked into ``--target`` with ``pip install --no-index --no-deps``. An
installed distribution is always kept: the carried wheels fill gaps, they never replace the machine's stack. Prints
the folder to put first on ``PYTHONPATH`` (nothing if nothing was unpacked); what was kept, unpacked or is still
missing goes to stderr.

Usage::

    python benchmarks/carried_packages.py --wheels .gpu_carry/wheels --target .gpu_carry/site
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

REQUIREMENTS = Path(__file__).resolve().with_name("gpu_carry.txt")


def read_requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf8").splitlines())
    return [Requirement(line) for line in lines if line]


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def wheel_for(requirement: Requirement, wheels: list[Path]) -> Path | None:
    """The newest carried wheel that meets ``requirement`` and that this interpreter and platform can install."""
    supported = set(sys_tags())
    matches = []
    for wheel in wheels:
        name, wheel_version, _, tags = parse_wheel_filename(wheel.name)
        if name == canonicalize_name(requirement.name) and wheel_version in requirement.specifier:
            if tags & supported:
                matches.append((wheel_version, wheel))
    return max(matches)[1] if matches else None


def plan(requirements: list[Requirement], wheels: list[Path]) -> tuple[list[Path], list[str]]:
    """The wheels to unpack, and one line per requirement saying what happens to it."""
    to_unpack, lines = [], []
    for requirement in requirements:
        found = installed_version(requirement.name)
        if found is not None:
            lines.append(f"kept the installed {requirement.name} {found}")
            continue
        wheel = wheel_for(requirement, wheels)
        if wheel is None:
            lines.append(f"MISSING {requirement}: not installed, and no carried wheel of it installs on this Python")
        else:
            to_unpack.append(wheel)
            lines.append(f"unpacked {wheel.name} (not installed here)")
    return to_unpack, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, required=True, help="folder of the carried wheels")
    parser.add_argument("--target", type=Path, required=True, help="folder to unpack them into")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    args = parser.parse_args()
    to_unpack, lines = plan(read_requirements(args.requirements), sorted(args.wheels.glob("*.whl")))
    if to_unpack:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile"]
        command += ["--upgrade", "--target", str(args.target), *map(str, to_unpack)]
        subprocess.run(command, check=True, stdout=sys.stderr)
        print(args.target.resolve())
    for line in lines:
        print(f"carried packages: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
