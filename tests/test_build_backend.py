"""The in-tree build backend (tools/ferrocorn_build.py) that `pip install .` runs: maturin's
hooks, with the wheel built profile-guided unless that is turned off or impossible. (The build
itself is what `make install` runs before every test run; here, what decides it.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # make test-deps installs tomli where the standard library has no tomllib
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import ferrocorn_build  # noqa: E402


def test_pyproject_names_the_in_tree_backend() -> None:
    system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert system["build-backend"] == "ferrocorn_build"
    assert system["backend-path"] == ["tools"]


def test_every_pep_517_hook_is_there() -> None:
    for hook in ("build_wheel", "build_sdist", "get_requires_for_build_wheel",
                 "prepare_metadata_for_build_wheel", "build_editable"):
        assert callable(getattr(ferrocorn_build, hook)), hook


def test_the_wheel_is_profile_guided_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERROCORN_PGO", raising=False)
    assert ferrocorn_build._pgo_wanted() is None


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_ferrocorn_pgo_0_builds_in_one_pass(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FERROCORN_PGO", value)
    assert ferrocorn_build._pgo_wanted() == "FERROCORN_PGO=0"


def test_an_sdist_without_the_training_apps_builds_in_one_pass(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FERROCORN_PGO", raising=False)
    monkeypatch.setattr(ferrocorn_build, "ROOT", tmp_path)
    assert ferrocorn_build._pgo_wanted() == "no bench/apps to train on"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "linux"),
    ({"AUDITWHEEL_PLAT": "manylinux2014_x86_64"}, "manylinux2014"),
    ({"AUDITWHEEL_PLAT": "musllinux_1_2_aarch64"}, "musllinux_1_2"),
    ({"AUDITWHEEL_PLAT": "manylinux2014_x86_64", "FERROCORN_COMPATIBILITY": "linux"}, "linux"),
])
def test_the_wheel_is_tagged_for_the_container_it_is_built_in(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    """cibuildwheel builds in pypa's images, which name their platform in AUDITWHEEL_PLAT: the
    wheel gets that tag from maturin (and `ferrocorn --version` records it)."""
    for name in ("AUDITWHEEL_PLAT", "FERROCORN_COMPATIBILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ferrocorn_build._compatibility() == expected
