"""HTTP mutants: the reference adapter whose ``conveyor web`` breaks one rule of the binding.

Run ``python http_adapter.py MUTANT [--backend memory]`` under ``conveyor-conformance run
--http auto``. The suite's own tests assert that HTTP mode rejects each one, naming the
requirement in ``MUTANTS``; without ``--http`` nothing of the binding is used.
"""

from __future__ import annotations

import sys
from typing import Any

#: mutant name -> (what it breaks, the requirement the suite must name)
MUTANTS: dict[str, tuple[str, str]] = {
    "not-found-as-400": ("not_found is answered with status 400", "HTTP-008"),
    "no-location": ("a publish answers 201 without Location", "HTTP-003"),
    "unknown-parameters-ignored": ("a listing ignores parameters it does not know", "HTTP-005"),
    "no-credentials": ("the configured token is not required", "HTTP-010"),
    "sequence-cursor": ("next_after is the last job's sequence, not its id", "HTTP-001"),
}


def patch(mutant: str) -> None:
    from conveyor import conformance_http
    from conveyor.web import api, service

    if mutant == "not-found-as-400":
        api.STATUS_OF_CODE["not_found"] = 400
    elif mutant == "no-location":
        original = api.publish

        async def publish(web: Any, request: Any) -> Any:
            return (await original(web, request)).document

        for index, endpoint in enumerate(api.ENDPOINTS):
            if endpoint.operation == "publishJob":
                api.ENDPOINTS = (
                    *api.ENDPOINTS[:index],
                    api.Endpoint(**{**endpoint.__dict__, "handler": publish}),
                    *api.ENDPOINTS[index + 1 :],
                )
    elif mutant == "unknown-parameters-ignored":
        api._known_params = lambda request, endpoint: None  # type: ignore[assignment]
    elif mutant == "no-credentials":
        serve = conformance_http.BindingServer.serve

        def without_token(self: Any, app: Any) -> None:
            self.token = None
            serve(self, app)

        conformance_http.BindingServer.serve = without_token  # type: ignore[method-assign]
    elif mutant == "sequence-cursor":
        list_jobs = service.WebService.list_jobs

        def by_sequence(self: Any, **options: Any) -> Any:
            page = list_jobs(self, **options)
            if page.next_after is None:
                return page
            sequence = self.app.get(page.next_after).sequence
            return service.JobPage(page.jobs, sequence)

        service.WebService.list_jobs = by_sequence  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown HTTP mutant {mutant!r}; known: {', '.join(MUTANTS)}")


def main() -> int:
    if len(sys.argv) < 2:
        raise SystemExit("usage: http_adapter.py MUTANT [adapter options]")
    mutant, rest = sys.argv[1], sys.argv[2:]
    patch(mutant)
    from conveyor.conformance_adapter import main as serve

    return serve(rest)


if __name__ == "__main__":
    raise SystemExit(main())
