"""Shared helpers for the suite's own tests: run the CLI against an adapter, read the report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
REFERENCE = f"{PYTHON} -m conveyor.conformance_adapter --backend memory"
MODEL = f"{PYTHON} -m conveyor_conformance.model_adapter"
MUTANT = f"{PYTHON} {HERE / 'mutants' / 'adapter.py'}"
JS_ADAPTER = ROOT / "examples" / "js-adapter" / "adapter.js"


@dataclass
class Run:
    code: int
    output: str
    report: dict[str, Any]

    @property
    def failed_requirements(self) -> set[str]:
        return {
            req
            for check in self.report["checks"]
            if check["status"] in ("fail", "error")
            for req in check["failed_requirements"]
        }

    def check(self, check_id: str) -> dict[str, Any]:
        return next(c for c in self.report["checks"] if c["id"] == check_id)


def run_suite(tmp_path: Path, adapter: str, *options: str) -> Run:
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [
            PYTHON,
            "-m",
            "conveyor_conformance",
            "run",
            "--adapter",
            adapter,
            "--report",
            str(report),
            "--timeout",
            "20",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return Run(completed.returncode, completed.stdout + completed.stderr, data)


@pytest.fixture
def suite(tmp_path: Path) -> Any:
    def runner(adapter: str, *options: str) -> Run:
        return run_suite(tmp_path, adapter, *options)

    return runner


def node() -> str | None:
    return shutil.which("node")
