"""ferrocorn's PEP 517 build backend: maturin's, with the wheel built profile-guided.

``pip install .`` calls this backend (``pyproject.toml``: ``backend-path = ["tools"]``). Every
hook is maturin's except ``build_wheel``, which runs ``tools/pgo_build.py``: an instrumented
build serves a short training load on 127.0.0.1, then the release build uses the counts. It is
the wheel `make install` builds, the one the benchmarks measure.

The wheel is tagged for this machine (``linux_x86_64``), or for the manylinux or musllinux
platform of the container it is built in (cibuildwheel's, ``AUDITWHEEL_PLAT``), or as
``FERROCORN_COMPATIBILITY`` says (maturin's ``--compatibility``, which also checks the wheel).

The one-pass build is used instead when ``FERROCORN_PGO=0`` is set, when the source has no
``bench/apps`` to train on (an sdist), or when the profile-guided build fails (no
``llvm-profdata`` and no rustup to add it, say): a warning says which.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import maturin
from maturin import (  # noqa: F401  (the hooks this backend does not change)
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_wheel,
)

ROOT = Path(__file__).resolve().parent.parent


def _pgo_wanted() -> str | None:
    """Why the one-pass build is used, or None for the profile-guided one."""
    if os.environ.get("FERROCORN_PGO", "1").lower() in {"0", "false", "no", "off"}:
        return "FERROCORN_PGO=0"
    if not (ROOT / "bench" / "apps").is_dir():
        return "no bench/apps to train on"
    return None


def _compatibility() -> str:
    """maturin's ``--compatibility`` for this build: ``FERROCORN_COMPATIBILITY`` when set, else
    the platform of a pypa manylinux or musllinux image (its ``AUDITWHEEL_PLAT``, as
    cibuildwheel builds in: ``manylinux2014_x86_64`` gives ``manylinux2014``), else ``linux``
    (the plain tag of a wheel built for this machine)."""
    if os.environ.get("FERROCORN_COMPATIBILITY"):
        return os.environ["FERROCORN_COMPATIBILITY"]
    plat = os.environ.get("AUDITWHEEL_PLAT", "")
    for arch in ("_x86_64", "_aarch64", "_i686", "_ppc64le", "_s390x", "_armv7l", "_riscv64"):
        if plat.endswith(arch):
            return plat.removesuffix(arch)
    return "linux"


def build_wheel(
    wheel_directory: str,
    config_settings: Mapping[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    why_not = _pgo_wanted()
    if why_not is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import pgo_build

        with tempfile.TemporaryDirectory() as out:
            try:
                platform = pgo_build.Platform(compatibility=_compatibility())
                wheel = pgo_build.build(sys.executable, Path(out), platform)
            except (SystemExit, Exception) as e:  # noqa: BLE001 (any failure: fall back)
                why_not = f"the profile-guided build failed ({e})"
            else:
                shutil.copy2(wheel, Path(wheel_directory) / wheel.name)
                return wheel.name
    print(f"ferrocorn: one-pass build: {why_not}", file=sys.stderr, flush=True)
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)
