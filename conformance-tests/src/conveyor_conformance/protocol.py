"""The harness protocol's schemas (``protocol/``) and validation of the traffic against them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from . import ecma, paths
from .spec import Spec

#: Rules of the protocol itself, cited like spec requirements in reports (protocol.md).
PROTOCOL_RULES = {
    "PROTO-001": "One JSON object per line on stdin and stdout, one response per request, "
    "in order, echoing the request's seq.",
    "PROTO-002": "Nothing but responses on stdout; logs go to stderr.",
    "PROTO-003": "The start handshake names the implementation, the spec version, the features "
    "it claims and the optional commands it implements.",
    "PROTO-004": "Every request and response validates against the protocol schemas.",
    "PROTO-005": "reset empties the store and registers the handlers.",
    "PROTO-006": "The adapter answers each request within the timeout and does not exit early.",
}


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    group: str
    capability: str | None
    feature: str | None
    schema: dict[str, Any]


class Protocol:
    def __init__(self, spec: Spec, root: Path | None = None) -> None:
        self.root = root or paths.protocol_dir()
        self.spec = spec
        self.envelope = json.loads((self.root / "envelope.schema.json").read_text("utf-8"))
        self.commands: dict[str, Command] = {}
        # What each command needs lives beside the schemas, which stay strict-clean (no x-*).
        index = json.loads((self.root / "commands.json").read_text("utf-8"))["commands"]
        for path in sorted((self.root / "commands").glob("*.schema.json")):
            schema = json.loads(path.read_text("utf-8"))
            name = schema["title"]
            meta = index.get(name, {})
            self.commands[name] = Command(
                name,
                schema["description"],
                meta.get("group", "other"),
                meta.get("capability"),
                meta.get("feature"),
                schema,
            )

    @cached_property
    def registry(self) -> Registry[Any]:
        resources = [(self.envelope["$id"], Resource.from_contents(self.envelope))]
        resources += [
            (c.schema["$id"], Resource.from_contents(c.schema)) for c in self.commands.values()
        ]
        registry: Registry[Any] = self.spec.registry.with_resources(resources)
        return registry

    @cached_property
    def ecma_registry(self) -> Registry[Any]:
        """The spec's and the protocol's schemas for ECMA-262 validation (VER-008)."""
        documents = {c.name: c.schema for c in self.commands.values()}
        documents["envelope"] = self.envelope
        protocol: Registry[Any] = ecma.registry_without_dialect(documents)
        return self.spec.ecma_registry.combine(protocol)

    def _validator(self, ref: str) -> Draft202012Validator:
        cache: dict[str, Draft202012Validator] = self.__dict__.setdefault("_validators", {})
        if ref not in cache:
            # VER-008: "$" ends the string, as in the adapters' own languages' validators.
            cache[ref] = ecma.validator(ref, self.ecma_registry)
        return cache[ref]

    def _errors(self, ref: str, document: Any) -> list[str]:
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in self._validator(ref).iter_errors(document)
        ]

    def check_request(self, request: dict[str, Any]) -> list[str]:
        problems = self._errors(self.envelope["$id"] + "#/$defs/request", request)
        if problems:
            return problems
        command = self.commands[request["cmd"]]
        return self._errors(command.schema["$id"] + "#/$defs/request", request)

    def check_response(self, cmd: str, response: dict[str, Any]) -> list[str]:
        problems = self._errors(self.envelope["$id"] + "#/$defs/response", response)
        if problems or "result" not in response or cmd not in self.commands:
            return problems
        command = self.commands[cmd]
        return self._errors(command.schema["$id"] + "#/$defs/result", response["result"])
