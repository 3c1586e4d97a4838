"""What a release ships: one version (Cargo.toml's) everywhere it is read, a
CHANGELOG entry for it, and the metadata a package index shows."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import upsonic_server_manager

ROOT = Path(__file__).resolve().parent.parent
DIST = "upsonic-server-manager"


def cargo_version() -> str:
    manifest = (ROOT / "Cargo.toml").read_text()
    package = manifest.split("[package]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
    assert found, "Cargo.toml's [package] has no version"
    return found.group(1)


def test_one_version_from_cargo_toml() -> None:
    version = cargo_version()
    assert upsonic_server_manager.__version__ == version, (
        f"__version__ is {upsonic_server_manager.__version__!r} but Cargo.toml says "
        f"{version!r}: rebuild the extension (maturin develop)"
    )
    assert importlib.metadata.version(DIST) == version, (
        "the installed metadata's version differs from Cargo.toml's: reinstall the package"
    )
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M), (
        'pyproject.toml must take the version from Cargo.toml (dynamic = ["version"])'
    )
    assert not re.search(r"^version\s*=", pyproject, re.M), "pyproject.toml spells a version"


def test_changelog_names_the_version() -> None:
    version = cargo_version()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(version)}\b", changelog, re.M), (
        f"CHANGELOG.md has no '## {version}' heading for Cargo.toml's version"
    )


def test_metadata_an_index_shows() -> None:
    meta = importlib.metadata.metadata(DIST)
    classifiers = set(meta.get_all("Classifier") or [])
    wanted = {"Typing :: Typed", "Operating System :: POSIX :: Linux"}
    wanted |= {f"Programming Language :: Python :: 3.{minor}" for minor in range(9, 14)}
    assert not wanted - classifiers, f"missing classifiers: {sorted(wanted - classifiers)}"
    assert meta["Requires-Python"] == ">=3.9"
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    urls = {u.split(",", 1)[0] for u in meta.get_all("Project-URL") or []}
    assert {"Homepage", "Documentation", "Repository", "Issues", "Changelog"} <= urls
    assert "uvicorn" in (meta["Keywords"] or "")
    # py.typed ships, so type checkers read the package's annotations.
    assert (Path(upsonic_server_manager.__file__).parent / "py.typed").is_file()
