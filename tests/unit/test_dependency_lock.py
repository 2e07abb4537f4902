"""constraints.txt, the lock that `make install` and the image install through: it pins every
dependency pyproject.toml names, at a version pyproject.toml allows, and this environment
holds those versions."""

import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parents[2]


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return [Requirement(line) for line in declared]


def parse_lock(text: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


@cache
def pins() -> dict[str, str]:
    """Name to pinned version, of the lock's lines that apply to this interpreter."""
    return pins_of(parse_lock((REPOSITORY / "constraints.txt").read_text()))


def pins_of(lock: list[Requirement]) -> dict[str, str]:
    applicable: dict[str, str] = {}
    for requirement in lock:
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise ValueError(f"not pinned with ==: {requirement}")
        if requirement.marker is None or requirement.marker.evaluate():
            applicable[canonicalize_name(requirement.name)] = specifiers[0].version
    return applicable


def test_a_lock_line_that_is_not_an_exact_pin_is_refused() -> None:
    with pytest.raises(ValueError, match="not pinned"):
        pins_of(parse_lock("fastapi>=0.165\n"))
    assert pins_of(parse_lock("fastapi==0.165.0\n    # via lyceum\n")) == {"fastapi": "0.165.0"}
    assert pins_of(parse_lock("pywin32==312 ; sys_platform == 'never'\n")) == {}


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_every_declared_dependency_is_pinned_at_a_version_it_allows(
    requirement: Requirement,
) -> None:
    pinned = pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is not in constraints.txt: run `make lock`"
    assert requirement.specifier.contains(pinned, prereleases=True), (
        f"constraints.txt pins {requirement.name}=={pinned}, which pyproject.toml's "
        f"{requirement} excludes: run `make lock`"
    )


def test_this_environment_holds_the_locked_versions() -> None:
    differing = {}
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            differing[name] = f"{installed}, locked {pinned}"
    assert not differing, f"run `make install`: {differing}"
