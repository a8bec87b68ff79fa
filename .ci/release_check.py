"""Build and check the release artefacts of the library and the conformance suite.

Each step a release runs before it publishes, none of which needs the network:

1. build each package's sdist, unpack it, and build the wheel from the unpacked sdist (as an
   installer does), so a sdist that cannot build a wheel fails here;
2. ``twine check`` (the package index would render the README) and ``check-wheel-contents``;
3. install both wheels into a fresh virtualenv, outside the repository, and from there run
   ``conveyor --version``, ``conveyor demo`` and the conformance suite against the reference
   adapter on the memory and SQLite backends, checking that every import comes from the
   virtualenv, never from the source tree.

The fresh virtualenv takes the wheels' dependencies from the development virtualenv (offline,
the default) or from the package index (``--resolve``, used by the release workflow, which
proves the declared dependencies are enough). Packages land in ``dist/``; what the GitHub release
attaches besides them (the spec files, the conformance reports, the release notes) in
``dist/assets/``. ``--tag vX.Y.Z`` also checks that the tag names the library's version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"conveyor-queue": ROOT / "python", "conveyor-conformance": ROOT / "conformance-tests"}
BACKENDS = ("memory", "sqlite")


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command, echoing it; fail with its output when it fails."""
    words = [str(word) for word in command]
    shown = [w if len(w) < 200 else w[:40] + "..." for w in words]
    print("   $", " ".join(shown), flush=True)
    done = subprocess.run(
        words,
        cwd=cwd,
        env=env,
        text=True,
        capture_output=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        raise SystemExit(f"release-check: failed ({done.returncode}): {' '.join(words)}")
    return done.stdout


def source_date_epoch() -> str:
    """The last commit's time, so two builds of one commit give the same files."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%ct"],
            check=False,
            cwd=ROOT,
            text=True,
            capture_output=True,
        )
        return out.stdout.strip() or "315532800"
    except OSError:
        return "315532800"


def build(package: Path, out: Path, work: Path) -> None:
    """The sdist from the checkout, then the wheel from the unpacked sdist."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": source_date_epoch()}
    python = sys.executable
    before = set(out.glob("*.tar.gz"))
    run(python, "-m", "build", "--no-isolation", "--sdist", "--outdir", out, package, env=env)
    (sdist,) = set(out.glob("*.tar.gz")) - before
    name = package.name
    unpacked = work / f"sdist-{name}"
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (tree,) = unpacked.iterdir()
    run(python, "-m", "build", "--no-isolation", "--wheel", "--outdir", out, tree, env=env)


def fresh_venv(where: Path, wheels: list[Path], resolve: bool) -> Path:
    """A new virtualenv holding our wheels; returns its python."""
    run(sys.executable, "-m", "venv", where)
    python = where / "bin" / "python"
    pip: list[str | Path] = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    if resolve:
        run(*pip, *wheels)
        return python
    run(*pip, "--no-index", "--no-deps", *wheels)
    # Dependencies from the development virtualenv, behind the fresh one's own site-packages:
    # its .pth files (the editable installs of the checkout) are not processed from here.
    purelib = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (purelib / "zz_release_check_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8"
    )
    return python


PROBE = """
import json, sys
from importlib import metadata
from pathlib import Path
import conveyor, conveyor_conformance
from conveyor.specfiles import spec_dir, spec_version
from conveyor_conformance import paths
prefix = Path(sys.prefix).resolve()
found = {
    "conveyor": conveyor.__file__, "conveyor_conformance": conveyor_conformance.__file__,
    "spec": str(spec_dir()), "suite_spec": str(paths.spec_dir()),
    "vectors": str(paths.vectors_dir()), "protocol": str(paths.protocol_dir()),
}
outside = {k: v for k, v in found.items() if not Path(v).resolve().is_relative_to(prefix)}
modules = (conveyor, conveyor_conformance)
typed = all((Path(m.__file__).parent / "py.typed").is_file() for m in modules)
missing = []
for dist in ("conveyor-queue", "conveyor-conformance"):
    for requirement in metadata.requires(dist) or []:
        if "extra ==" in requirement:
            continue
        name = requirement.split(";")[0].split("[")[0]
        for mark in "<>=!~ ":
            name = name.split(mark)[0]
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
print(json.dumps({"outside": outside, "typed": typed, "missing": missing,
                  "version": conveyor.__version__, "spec": spec_version()}))
"""


def check_installed(python: Path, work: Path, reports: Path, examples: list[str]) -> None:
    """Everything runs from a directory outside the checkout, without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    cwd = work / "run"
    cwd.mkdir()
    probe = json.loads(run(python, "-I", "-c", PROBE, cwd=cwd, env=env))
    if probe["outside"]:
        raise SystemExit(f"release-check: imported from outside the virtualenv: {probe['outside']}")
    if not probe["typed"]:
        raise SystemExit("release-check: an installed package has no py.typed")
    if probe["missing"]:
        raise SystemExit(f"release-check: dependencies not installed: {probe['missing']}")
    spec = (ROOT / "spec" / "VERSION").read_text(encoding="utf-8").strip()
    if probe["version"] != version_of(PACKAGES["conveyor-queue"], "conveyor"):
        raise SystemExit(f"release-check: the wheel carries version {probe['version']}")
    if probe["spec"] != spec:
        raise SystemExit(f"release-check: the wheel carries spec {probe['spec']}, not {spec}")
    version = run(python.parent / "conveyor", "--version", cwd=cwd, env=env)
    print("  ", version.strip())
    run(python.parent / "conveyor", "demo", "--db", cwd / "demo.db", cwd=cwd, env=env)
    # The backends run side by side: each is one adapter process and one suite process.
    with ThreadPoolExecutor(len(BACKENDS)) as pool:
        runs = [
            pool.submit(
                run,
                python.parent / "conveyor-conformance",
                "run",
                "--quiet",
                "--adapter",
                f"{python} -m conveyor.conformance_adapter --backend {backend}",
                "--report",
                reports / f"conformance-{backend}.json",
                *examples,
                cwd=cwd,
                env=env,
            )
            for backend in BACKENDS
        ]
        for done in runs:
            print("  ", done.result().strip())


def version_of(package: Path, module: str) -> str:
    """The one version source of a package: ``__version__`` in its ``__init__.py``."""
    text = (package / "src" / module / "__init__.py").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("__version__ = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit(f"release-check: no __version__ in {package}/src/{module}/__init__.py")


def check_tag(tag: str, library: str) -> None:
    if tag != f"v{library}":
        raise SystemExit(
            f"release-check: the tag {tag} does not name the library's version {library}; "
            f"tag v{library}, or set __version__ in python/src/conveyor/__init__.py"
        )


def assets(out: Path, reports: Path, library: str, suite: str, spec: str) -> None:
    """The spec files as one archive, the conformance reports and the release notes."""
    target = out / "assets"
    target.mkdir()
    with tarfile.open(target / f"conveyor-spec-{spec}.tar.gz", "w:gz") as archive:
        for path in sorted((ROOT / "spec").rglob("*")):
            relative = path.relative_to(ROOT / "spec")
            if (
                path.is_file()
                and relative.parts[0] not in ("tools",)
                and "__pycache__" not in (relative.parts)
            ):
                archive.add(path, arcname=f"conveyor-spec-{spec}/{relative.as_posix()}")
    for report in sorted(reports.glob("*.json")):
        shutil.copy(report, target / report.name)
    sums = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
        for path in sorted(out.iterdir())
        if path.is_file()
    ]
    (target / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    (target / "NOTES.md").write_text(
        f"- `conveyor-queue` {library}: the Python reference library, implements Conveyor spec "
        f"{spec}\n"
        f"- `conveyor-conformance` {suite}: the conformance suite, checks spec {spec}\n"
        f"- `conveyor-spec-{spec}.tar.gz`: the spec's normative text, schemas and machine files\n"
        "- `SHA256SUMS`: the packages' digests; a rebuild of this tag from the lock file "
        "gives the same files\n"
        "- `conformance-*.json`: the reports of the installed suite against the installed library "
        "(memory and SQLite backends)\n\n"
        "What changed: python/CHANGELOG.md, conformance-tests/CHANGELOG.md, spec/CHANGELOG.md.\n",
        encoding="utf-8",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="artefacts (emptied)")
    parser.add_argument(
        "--resolve",
        action="store_true",
        help="install the wheels' dependencies from the package index (needs the network)",
    )
    parser.add_argument("--tag", help="the release tag (vX.Y.Z) that must name the version")
    args = parser.parse_args()
    started = time.monotonic()
    library = version_of(PACKAGES["conveyor-queue"], "conveyor")
    suite = version_of(PACKAGES["conveyor-conformance"], "conveyor_conformance")
    spec = (ROOT / "spec" / "VERSION").read_text(encoding="utf-8").strip()
    if args.tag is not None:
        check_tag(args.tag, library)
    out: Path = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="conveyor-release-") as temporary:
        work = Path(temporary)
        for name, package in PACKAGES.items():
            print(f"== release-check: build {name} (sdist, then the wheel from the sdist)")
            build(package, out, work)
        artefacts = sorted(p for p in out.iterdir() if p.is_file())
        wheels = [p for p in artefacts if p.suffix == ".whl"]
        if len(wheels) != len(PACKAGES) or len(artefacts) != 2 * len(PACKAGES):
            raise SystemExit(f"release-check: expected one sdist and one wheel each: {artefacts}")
        print("== release-check: twine check, check-wheel-contents")
        bin_dir = Path(sys.executable).parent
        run(bin_dir / "twine", "check", "--strict", *artefacts)
        run(bin_dir / "check-wheel-contents", *wheels)
        print("== release-check: install into a fresh virtualenv, run the demo and conformance")
        python = fresh_venv(work / "venv", wheels, args.resolve)
        reports = work / "reports"
        reports.mkdir()
        # `just conformance` runs the full suite from the checkout; here the point is that the
        # installed packages work, so the offline check runs fewer stateful examples.
        examples = [] if args.resolve else ["--max-examples", "15"]
        check_installed(python, work, reports, examples)
        assets(out, reports, library, suite, spec)
    print(f"== release-check: passed in {time.monotonic() - started:.0f} s; artefacts in {out}")


if __name__ == "__main__":
    main()
