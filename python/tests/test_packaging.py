"""The wheel carries the spec files, identical to spec/ (the single source of truth)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_an_exact_copy_of_the_spec(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO / "python"),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("conveyor-*.whl")
    spec = REPO / "spec"
    expected = {
        path.relative_to(spec).as_posix(): path.read_bytes()
        for pattern in ("VERSION", "retry-presets.json", "machines/*.json", "schemas/*.json")
        for path in spec.glob(pattern)
    }
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        packaged = {
            name.removeprefix("conveyor/_spec/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("conveyor/_spec/")
        }

    assert packaged == expected
    # The dashboard's templates and static files ship inside the wheel (no CDN at run time).
    web = REPO / "python" / "src" / "conveyor" / "web"
    for folder in ("templates", "static"):
        for path in (web / folder).iterdir():
            assert f"conveyor/web/{folder}/{path.name}" in names


def test_library_loads_the_repository_spec_in_a_checkout() -> None:
    from conveyor.specfiles import spec_dir, spec_version

    assert (spec_dir() / "machines" / "job.json").is_file()
    assert spec_version() == (REPO / "spec" / "VERSION").read_text().strip()
