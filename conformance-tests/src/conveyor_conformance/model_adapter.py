"""The suite's own model served as an adapter: ``python -m conveyor_conformance.model_adapter``.

It lets the suite's tests check the vectors against the model without any implementation, and
shows in a few lines what an adapter does; its worker mode runs a worker loop over the protocol's
own commands (``model_worker``). Where the spec leaves room (jittered delays, error
messages) it answers with the lowest or a fixed value. It claims ``broker`` too: through the
protocol, a broker implementation claims exactly as the model does (spec.md#broker).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import PROTOCOL_VERSION, __version__
from .matching import is_matcher
from .model import Model
from .model_worker import ScriptedWorker
from .spec import Spec

FEATURES = [
    "serial_groups",
    "unique",
    "recurring",
    "dependencies",
    "multi_request",
    "batches",
    "tags",
    "broker",
    "timeouts",
    "results",
    "progress",
    "cron",
    "concurrency",
    "rate_limits",
    "cancel_running",
    "unique_keys",
]
CAPABILITIES = [
    "publish_bulk",
    "claim_by_id",
    "fire",
    "notifications",
    "priorities",
    "pause_queues",
    "worker",
]


def concrete(value: Any, key: str = "") -> Any:
    if is_matcher(value):
        ((name, argument),) = value.items()
        if name == "$any":
            return {"message": "model", "request": 0, "completion": None}.get(key)
        if name in ("$range", "$time_range"):
            return argument[0]
        if name in ("$unordered", "$contains"):
            return [concrete(v) for v in argument]
        raise ValueError(f"cannot make {name} concrete")
    if isinstance(value, dict):
        return {k: concrete(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [concrete(v) for v in value]
    return value


class ModelAdapter:
    def __init__(self, features: list[str]) -> None:
        self.spec = Spec.load()
        self.features = features
        self.model = Model(self.spec, set(features))
        self.counter = 0
        self.worker = ScriptedWorker(lambda cmd, args: self.handle({"cmd": cmd, **args}))

    def ids(self, count: int) -> list[str]:
        found = []
        for _ in range(count):
            self.counter += 1
            found.append(str(self.counter))
        return found

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        args = {k: v for k, v in request.items() if k not in ("seq", "cmd")}
        if cmd == "start":
            return {
                "result": {
                    "version": PROTOCOL_VERSION,
                    "implementation": {
                        "name": "conveyor-model",
                        "version": __version__,
                        "language": "python",
                    },
                    "specversion": self.spec.wire_version,
                    "features": self.features,
                    "capabilities": CAPABILITIES,
                }
            }
        if cmd == "stop":
            return {"result": {}}
        if cmd == "script_handlers":
            return {"result": self.worker.script(args["scripts"])}
        if cmd == "run_worker":
            return {"result": self.worker.run(args)}
        if cmd == "reset":
            self.worker.reset(args.get("handlers", []))
        args.pop("seed", None)
        count = len(args.get("jobs", [])) if cmd == "publish_bulk" else 1
        prediction = self.model.execute(cmd, args, new_ids=self.ids(count))
        for placeholder in prediction.created:
            if self.model.is_placeholder(placeholder):
                self.model.rename(placeholder, self.ids(1)[0])
        if prediction.error is not None:
            return {"error": {"code": prediction.error.code, "message": prediction.error.message}}
        result = concrete(prediction.result)
        for job in _jobs(result):
            if job.get("available_at") is not None:
                self.model.adopt_available_at(job["id"], job["available_at"])
            job["sequence"] = (
                self.model.jobs[job["id"]].order if job["id"] in self.model.jobs else 1
            )
        return {"result": result}


def _jobs(result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    found = [result["job"]] if isinstance(result.get("job"), dict) else []
    found += [j for j in result.get("jobs", []) if isinstance(j, dict)]
    return found


def main() -> int:
    features = FEATURES
    if len(sys.argv) > 1 and sys.argv[1] == "--core":
        features = []
    adapter = ModelAdapter(features)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            response = adapter.handle(request)
        except Exception as error:  # pragma: no cover - reported to the harness
            response = {"errored": {"message": f"{type(error).__name__}: {error}"}}
        sys.stdout.write(json.dumps({"seq": request.get("seq"), **response}) + "\n")
        sys.stdout.flush()
        if request.get("cmd") == "stop":
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
