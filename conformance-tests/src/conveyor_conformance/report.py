"""The JSON report and its readable summary: requirement by requirement, feature by feature.

Verdicts, as exit codes of ``conveyor-conformance run``:

- ``conforms`` (0): every check of the core and of the claimed features ran and passed;
- ``does_not_conform`` (1): a check failed, or the adapter skipped a check it must run;
- ``inconclusive`` (2): the adapter broke the protocol, crashed or hung, so nothing can be said.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import PROTOCOL_VERSION, __version__
from .coverage import NOT_TESTABLE, PARTLY_TESTABLE, WORKER, WORKER_SIDE
from .protocol import PROTOCOL_RULES
from .spec import Spec
from .vectors import CheckResult

EXIT_CODES = {"conforms": 0, "does_not_conform": 1, "inconclusive": 2}
REPORT_FORMAT = 1


def _entry(feature: str, level: str, summary: str) -> dict[str, Any]:
    return {
        "feature": feature,
        "level": level,
        "summary": summary,
        "passed": 0,
        "failed": 0,
        "skipped": 0,
        "errored": 0,
        "failing_checks": [],
        "departures": [],
    }


def _status(passed: int, failed: int, skipped: int, errored: int) -> str:
    if failed:
        return "fail"
    if errored:
        return "error"
    if passed:
        return "pass"
    if skipped:
        return "skip"
    return "untested"


def build(
    spec: Spec,
    handshake: dict[str, Any],
    checks: list[CheckResult],
    options: dict[str, Any],
    started: str,
    finished: str,
    fatal: str | None = None,
) -> dict[str, Any]:
    claimed = set(handshake.get("features", []))
    selected = options.get("features")
    requirements: dict[str, Any] = {}
    for requirement in spec.requirements.values():
        requirements[requirement.id] = _entry(
            requirement.feature, requirement.level, requirement.summary
        )
    for rule, text in PROTOCOL_RULES.items():
        requirements[rule] = _entry("protocol", "must", text)
    store_side: dict[str, int] = {}
    for check in checks:
        cited = set(check.requirements)
        if check.status in ("fail", "error"):
            cited |= set(check.failed_requirements)
        for req in cited:
            entry = requirements.setdefault(
                req, _entry(spec.feature_of(req), "unknown", "(not in spec.md)")
            )
            if check.status == "pass" and req in WORKER_SIDE and WORKER not in check.requires:
                store_side[req] = store_side.get(req, 0) + 1  # its worker side not exercised
            elif check.status == "pass":
                entry["passed"] += 1
            elif check.status == "skip":
                entry["skipped"] += 1
            elif req in check.failed_requirements:
                entry["failed" if check.status == "fail" else "errored"] += 1
                entry["failing_checks"].append(check.id)
        if check.status == "pass":
            for departure in check.detail.get("departures", []):
                for req in departure["requirements"]:
                    if req in requirements and check.id not in requirements[req]["departures"]:
                        requirements[req]["departures"].append(check.id)
    for req, entry in requirements.items():
        entry["status"] = _status(
            entry["passed"], entry["failed"], entry["skipped"], entry["errored"]
        )
        feature = entry["feature"]
        if feature not in ("core", "protocol") and feature not in claimed:
            entry["status"] = "not_claimed" if entry["status"] != "fail" else "fail"
        if req in NOT_TESTABLE:
            entry["note"] = NOT_TESTABLE[req]
            if entry["status"] == "untested":
                entry["status"] = "not_testable"
        elif req in PARTLY_TESTABLE:
            entry["note"] = PARTLY_TESTABLE[req]
        if req in WORKER_SIDE and entry["status"] in ("skip", "untested"):
            # Never passed by checks in which the harness stood in for the worker.
            entry["status"] = "untested"
            entry["note"] = _worker_note(req, store_side.get(req, 0))
    if checks and not options.get("validate_protocol"):
        requirements["PROTO-004"]["note"] = (
            "the traffic is validated against the protocol schemas only with --validate-protocol"
        )
    features: dict[str, Any] = {}
    for feature in ["core", *spec.features]:
        if feature == "core":
            in_feature = [c for c in checks if not c.features or c.kind != "vector"]
        else:
            in_feature = [c for c in checks if feature in c.features]
        counts = {
            s: sum(1 for c in in_feature if c.status == s)
            for s in ("pass", "fail", "skip", "error")
        }
        is_claimed = feature == "core" or feature in claimed
        features[feature] = {
            "claimed": is_claimed,
            "selected": selected is None or feature == "core" or feature in selected,
            "passed": counts["pass"],
            "failed": counts["fail"],
            "skipped": counts["skip"],
            "errored": counts["error"],
            "status": (
                "not_claimed"
                if not is_claimed
                else _status(counts["pass"], counts["fail"], counts["skip"], counts["error"])
            ),
        }
    totals = {s: sum(1 for c in checks if c.status == s) for s in ("pass", "fail", "skip", "error")}
    adapter_skips = [c.id for c in checks if c.detail.get("adapter_skip")]
    departures = [
        {"id": c.id, **departure}
        for c in checks
        if c.status == "pass"
        for departure in c.detail.get("departures", [])
    ]
    if fatal or totals["error"]:
        verdict = "inconclusive"
    elif totals["fail"] or adapter_skips:
        verdict = "does_not_conform"
    else:
        verdict = "conforms"
    return {
        "format": REPORT_FORMAT,
        "suite": {"name": "conveyor-conformance", "version": __version__},
        "protocol": PROTOCOL_VERSION,
        "specversion": spec.wire_version,
        "implementation": handshake.get("implementation", {}),
        "claimed_features": sorted(claimed),
        "capabilities": sorted(handshake.get("capabilities", [])),
        "options": options,
        "started": started,
        "finished": finished,
        "verdict": verdict,
        "fatal": fatal,
        "totals": totals,
        "adapter_skips": adapter_skips,
        "departures": departures,
        "features": features,
        "requirements": requirements,
        "checks": [_check_dict(c) for c in checks],
    }


def _worker_note(req: str, store_checks: int) -> str:
    note = f"not tested: no check of worker mode (capability `{WORKER}`) ran; {WORKER_SIDE[req]}"
    if store_checks:
        note += f" {store_checks} check(s) passed its store side, which alone is not a pass."
    return note


def _check_dict(check: CheckResult) -> dict[str, Any]:
    data = asdict(check)
    if not data["trace"]:
        data.pop("trace")
    if not data["detail"]:
        data.pop("detail")
    return data


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate of a LIMIT-007 vector: write it escaped
        encoded = (json.dumps(report, indent=2) + "\n").encode("ascii")
    path.write_bytes(encoded)


MARKS = {
    "pass": "PASS",
    "fail": "FAIL",
    "skip": "skip",
    "error": "ERROR",
    "untested": "-",
    "not_testable": "n/t",
    "not_claimed": "n/a",
}


def summary(report: dict[str, Any], *, verbose: bool = False) -> str:
    """The readable summary printed after a run."""
    implementation = report.get("implementation") or {}
    name = implementation.get("name", "?")
    backend = implementation.get("backend")
    title = f"{name} {implementation.get('version', '')}".strip()
    if backend:
        title += f" ({backend})"
    lines = [
        f"Conveyor conformance: {title}, spec {report['specversion']}, "
        f"protocol {report['protocol']}",
        f"claimed features: {', '.join(report['claimed_features']) or 'none (core only)'}",
        "",
        "Features:",
    ]
    for feature, info in report["features"].items():
        lines.append(
            f"  {MARKS.get(info['status'], info['status']):>5}  {feature:<15} "
            f"{info['passed']} passed, {info['failed']} failed, {info['skipped']} skipped"
            + (f", {info['errored']} errored" if info["errored"] else "")
        )
    shown = {
        req: info
        for req, info in report["requirements"].items()
        if verbose or info["status"] in ("fail", "error")
    }
    counts: dict[str, int] = {}
    for info in report["requirements"].values():
        counts[info["status"]] = counts.get(info["status"], 0) + 1
    lines += [
        "",
        "Requirements: "
        + ", ".join(f"{counts[s]} {s}" for s in MARKS if counts.get(s))
        + (" (run with --verbose to list them all)" if not verbose else ""),
    ]
    for req, info in shown.items():
        failing = ", ".join(info["failing_checks"][:5])
        lines.append(
            f"  {MARKS.get(info['status'], info['status']):>5}  {req:<10} {info['summary'][:70]}"
            + (f"\n{'':18}failed in: {failing}" if failing else "")
        )
        if verbose and info.get("note"):
            lines.append(
                f"{'':18}{'why' if info['status'] == 'not_testable' else 'note'}: {info['note']}"
            )
    untestable = [r for r, i in report["requirements"].items() if i["status"] == "not_testable"]
    if untestable and not verbose:
        lines.append(
            f"  n/t (not testable through the harness; --verbose says why): {', '.join(untestable)}"
        )
    unexercised = [
        r
        for r, i in report["requirements"].items()
        if i["status"] == "untested" and r in WORKER_SIDE
    ]
    if unexercised and not verbose:
        lines.append(
            f"    -  (not tested: no check of worker mode, capability `{WORKER}`, ran): "
            + ", ".join(unexercised)
        )
    by_check: dict[str, list[dict[str, Any]]] = {}
    for departure in report.get("departures", []):
        by_check.setdefault(departure["id"], []).append(departure)
    if by_check:
        lines += ["", "Departures from a SHOULD (allowed; the implementation documents them):"]
        for check_id, found in by_check.items():
            more = f" (and {len(found) - 1} more steps)" if len(found) > 1 else ""
            lines.append(f"  {check_id} [{', '.join(found[0]['requirements'])}]")
            lines.append(f"      {found[0]['message'][:500]}{more}")
    failures = [c for c in report["checks"] if c["status"] in ("fail", "error")]
    if failures:
        lines += ["", "Failures:"]
        for check in failures[:20]:
            reqs = ", ".join(check.get("failed_requirements") or check["requirements"])
            lines.append(f"  {check['id']} [{reqs}]")
            lines.append(f"      {check['message'][:1000]}")
            saved = (check.get("detail") or {}).get("saved_trace")
            if saved:
                lines.append(f"      minimal trace saved as {saved}")
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more in the JSON report")
    if report.get("adapter_skips"):
        lines += ["", f"Skipped by the adapter: {', '.join(report['adapter_skips'][:20])}"]
    totals = report["totals"]
    lines += [
        "",
        f"Checks: {totals['pass']} passed, {totals['fail']} failed, {totals['skip']} skipped, "
        f"{totals['error']} errored",
    ]
    if report.get("fatal"):
        lines.append(f"Adapter broken: {report['fatal']}")
    verdict = {
        "conforms": "CONFORMS",
        "does_not_conform": "DOES NOT CONFORM",
        "inconclusive": "INCONCLUSIVE (the adapter is broken)",
    }[report["verdict"]]
    lines.append(f"Verdict: {verdict}")
    return "\n".join(lines)


def export(report: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The part of a report the compliance matrix shows: stable from run to run."""
    implementation = report.get("implementation") or {}
    options = report.get("options") or {}
    return {
        "format": REPORT_FORMAT,
        "name": name or implementation.get("backend") or implementation.get("name", "?"),
        "implementation": implementation,
        "suite": report["suite"],
        "specversion": report["specversion"],
        "verdict": report["verdict"],
        "claimed_features": report["claimed_features"],
        "capabilities": report.get("capabilities", []),
        "stateful": {k: options.get(k) for k in ("seed", "max_examples", "steps")},
        "totals": report["totals"],
        "features": {
            feature: {k: info[k] for k in ("status", "passed", "failed", "skipped")}
            for feature, info in report["features"].items()
        },
        "requirements": {req: info["status"] for req, info in report["requirements"].items()},
        "notes": {
            req: info["note"] for req, info in report["requirements"].items() if info.get("note")
        },
        "departures": [
            {"id": d["id"], "requirements": d["requirements"]} for d in report.get("departures", [])
        ],
        "failures": [
            {"id": c["id"], "requirements": c.get("failed_requirements", [])}
            for c in report["checks"]
            if c["status"] in ("fail", "error")
        ],
    }
