"""The release artefacts: the sdist builds a wheel on its own, and the wheel carries an exact copy
of spec/ (the single source of truth), py.typed, the license and metadata naming the spec version.

The full check (twine, check-wheel-contents, a fresh virtualenv running the demo and the
conformance suite) is `just release-check` (.ci/release_check.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC_VERSION = (REPO / "spec" / "VERSION").read_text(encoding="utf-8").strip()
PACKAGES = {
    # directory: (distribution, import package, spec files it carries)
    "python": (
        "conveyor_queue",
        "conveyor",
        ("VERSION", "retry-presets.json", "machines/*.json", "schemas/*.json"),
    ),
    "conformance-tests": (
        "conveyor_conformance",
        "conveyor_conformance",
        ("VERSION", "spec.md", "retry-presets.json", "machines/*.json", "schemas/*.json"),
    ),
}


def _build(kind: str, source: Path, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--no-isolation",
            f"--{kind}",
            "--outdir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.tar.gz" if kind == "sdist" else "*.whl")
    return built


@pytest.mark.slow
@pytest.mark.parametrize("directory", sorted(PACKAGES))
def test_the_sdist_builds_a_wheel_carrying_the_spec(directory: str, tmp_path: Path) -> None:
    distribution, package, patterns = PACKAGES[directory]
    sdist = _build("sdist", REPO / directory, tmp_path / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (tree,) = (tmp_path / "unpacked").iterdir()
    # Away from the checkout: the wheel can only take the spec from the sdist.
    wheel = _build("wheel", tree, tmp_path / "wheel")

    spec = REPO / "spec"
    expected = {
        path.relative_to(spec).as_posix(): path.read_bytes()
        for pattern in patterns
        for path in spec.glob(pattern)
    }
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = {
            name.removeprefix(f"{package}/_spec/"): archive.read(name)
            for name in names
            if name.startswith(f"{package}/_spec/")
        }
        metadata = Parser().parsestr(
            archive.read(f"{wheel.name.rsplit('-', 3)[0]}.dist-info/METADATA").decode()
        )

    assert wheel.name.startswith(f"{distribution}-")
    assert packaged == expected
    assert f"{package}/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    major_minor = ".".join(SPEC_VERSION.split(".")[:2])
    assert f"spec {major_minor})" in metadata["Summary"]
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    if package == "conveyor":
        # The dashboard's templates and static files ship inside the wheel (no CDN at run time).
        web = REPO / "python" / "src" / "conveyor" / "web"
        for folder in ("templates", "static"):
            for path in (web / folder).iterdir():
                assert f"conveyor/web/{folder}/{path.name}" in names


@pytest.mark.slow
def test_two_builds_of_one_commit_are_identical(tmp_path: Path) -> None:
    """Reproducible: with SOURCE_DATE_EPOCH (the release sets the commit's time) the sdist and
    the wheel are byte for byte the same, so anyone can check a release against its tag."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    digests = []
    for attempt in ("first", "second"):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "build",
                "--no-isolation",
                "--outdir",
                str(tmp_path / attempt),
                str(REPO / "python"),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        digests.append(
            {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (tmp_path / attempt).iterdir()
            }
        )

    assert len(digests[0]) == 2
    assert digests[0] == digests[1]


@pytest.mark.parametrize("directory", sorted(PACKAGES))
def test_one_version_source_and_a_license_per_package(directory: str) -> None:
    root = REPO / directory
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    _, package, _ = PACKAGES[directory]
    init = (root / "src" / package / "__init__.py").read_text(encoding="utf-8")

    assert "version" not in project
    assert "version" in project["dynamic"]
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', init, flags=re.MULTILINE)
    assert (root / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()
    assert (root / "CHANGELOG.md").is_file()
    assert (root / "src" / package / "py.typed").is_file()


@pytest.mark.parametrize("directory", sorted(PACKAGES))
def test_the_readme_renders_without_escaped_newlines(directory: str) -> None:
    readme = (REPO / directory / "README.md").read_text(encoding="utf-8")

    assert "\\n" not in readme
    assert readme.startswith("# ")


def test_the_versions_table_names_the_spec_of_the_current_versions() -> None:
    """docs/project/versions.md: the row of this library's and suite's major.minor names the
    spec major.minor in spec/VERSION (the written policy stays true)."""
    from conveyor_conformance import __version__ as suite

    from conveyor import __version__ as library

    def minor(version: str) -> str:
        return ".".join(version.split(".")[:2])

    table = (REPO / "docs" / "project" / "versions.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+\.\d+)\.x \| (\d+\.\d+)\.x \| (\d+\.\d+) \|$", table, re.M)

    assert (minor(library), minor(suite), minor(SPEC_VERSION)) in rows


def test_library_loads_the_repository_spec_in_a_checkout() -> None:
    from conveyor.specfiles import spec_dir, spec_version

    assert (spec_dir() / "machines" / "job.json").is_file()
    assert spec_version() == SPEC_VERSION
