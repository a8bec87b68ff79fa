"""Where the spec files, the protocol schemas and the vectors are.

An installed wheel carries copies under ``_spec``, ``_protocol`` and ``_vectors``; in a checkout
(including an editable install) the suite reads the repository's own directories, so it always
tests against the files next to it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parents[1]  # conformance-tests/
REPOSITORY = PACKAGE.parents[2]


def _first(*candidates: Path, marker: str) -> Path:
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    names = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"cannot find {marker} in any of {names}; reinstall the suite")


def spec_dir(explicit: str | Path | None = None) -> Path:
    """The spec directory: ``explicit`` if given, else the packaged copy, else the checkout's."""
    if explicit is not None:
        path = Path(explicit)
        if not (path / "machines" / "job.json").is_file():
            raise FileNotFoundError(f"{path} is not a spec directory (no machines/job.json)")
        return path
    return _first(PACKAGE / "_spec", REPOSITORY / "spec", marker="machines/job.json")


def protocol_dir() -> Path:
    return _first(PACKAGE / "_protocol", CHECKOUT / "protocol", marker="envelope.schema.json")


def vectors_dir() -> Path:
    return _first(PACKAGE / "_vectors", CHECKOUT / "vectors", marker="vector.schema.json")
