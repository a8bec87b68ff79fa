"""What the web asks of the app, as plain synchronous calls returning JSON-ready values.

The HTTP layer runs these in a worker thread (Starlette's ``run_in_threadpool``): the app's
API is synchronous and the store's connections are per thread, so the event loop never waits
on the database. Nothing here knows about HTTP; the same calls serve the API and the pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..app import Conveyor
from ..clock import format_timestamp
from ..errors import InvalidRequest, JobNotFound
from ..model import Batch, Job
from ..wire import publish_request
from .masking import job_view, mask_urls
from .settings import WebSettings

LIST_LIMIT_MAX = 500
THROUGHPUT_MINUTES_MAX = 24 * 60
# A filter on request type is applied to the jobs read in publish order; one page reads at
# most this many jobs, and the cursor moves past them all (keyset pagination stays exact).
TYPE_SCAN_LIMIT = 5000


# A serial group on the groups page shows its first jobs in run order; its page, more.
SERIAL_GROUP_SHOWN = 6
SERIAL_GROUP_DETAIL_SHOWN = LIST_LIMIT_MAX


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict[str, Any]]
    next_after: str | None


@dataclass(frozen=True)
class BatchPage:
    batches: list[dict[str, Any]]
    next_after: str | None


@dataclass(frozen=True)
class GroupPage:
    groups: list[dict[str, Any]]
    next_after: str | None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise InvalidRequest(f"limit must be between 1 and {LIST_LIMIT_MAX}, not {limit}")


def batch_view(batch: Batch, counts: list[tuple[str, str, int]]) -> dict[str, Any]:
    """A batch as the API shows it: its completion job as the types and queue it will have
    (the published completion is a new job, found by its type)."""
    completion = batch.completion
    return {
        "id": batch.id,
        "state": batch.state,
        "total": batch.total,
        "counts": {state: count for _, state, count in counts},
        "completion": None
        if completion is None
        else {
            "queue": completion.get("queue"),
            "types": [request.get("type") for request in completion.get("requests", [])],
        },
        "created_at": format_timestamp(batch.created_at),
        "finished_at": format_timestamp(batch.finished_at) if batch.finished_at else None,
    }


class WebService:
    """The app's operations for the web interface, with its settings applied."""

    def __init__(self, app: Conveyor, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    @property
    def states(self) -> list[str]:
        return list(self.app.engine.machine.states)

    def view(self, job: Job) -> dict[str, Any]:
        return job_view(job.to_dict(), self.settings.show_payloads)

    def store_location(self) -> str:
        return mask_urls(self.app.store.display_url)

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        return self.view(self.app.get(job_id))

    def list_jobs(
        self,
        *,
        states: tuple[str, ...] = (),
        queue: str | None = None,
        type: str | None = None,
        tag: str | None = None,
        identifier: str | None = None,
        batch: str | None = None,
        serial_group: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Jobs in publish order after the job ``after`` (an id: a job no longer stored is
        refused with not_found, OPS-007); ``next_after`` names the job to read the next page
        after (None: there is none)."""
        unknown = [state for state in states if state not in self.states]
        if unknown:
            raise InvalidRequest(
                f"unknown state {', '.join(unknown)}; states are {', '.join(self.states)}"
            )
        _check_limit(limit)
        start = self.app.get(after).sequence if after is not None else 0
        options = {
            "states": states,
            "queue": queue,
            "tag": tag,
            "identifier": identifier,
            "batch": batch,
            "serial_group": serial_group,
        }
        if type is None:
            found = self.app.jobs(limit=limit + 1, after_sequence=start, **options)  # type: ignore[arg-type]
            more = len(found) > limit
            page = found[:limit]
            next_after = page[-1].id if more and page else None
            return JobPage([self.view(job) for job in page], next_after)
        matched: list[Job] = []
        cursor, cursor_id, scanned = start, after, 0
        while len(matched) < limit and scanned < TYPE_SCAN_LIMIT:
            chunk = self.app.jobs(limit=500, after_sequence=cursor, **options)  # type: ignore[arg-type]
            if not chunk:
                return JobPage([self.view(job) for job in matched], None)
            for job in chunk:
                cursor, cursor_id = job.sequence, job.id
                scanned += 1
                if any(request.type == type for request in job.requests):
                    matched.append(job)
                    if len(matched) == limit:
                        break
        return JobPage([self.view(job) for job in matched], cursor_id)

    def queues(self) -> list[dict[str, Any]]:
        """Every queue with jobs or a pause: counts by state, total, whether paused."""
        paused = self.app.paused_queues()
        by_queue: dict[str, dict[str, int]] = {}
        for queue, state, count in self.app.status():
            by_queue.setdefault(queue, {})[state] = count
        for queue in paused:
            by_queue.setdefault(queue, {})
        return [
            {
                "queue": queue,
                "counts": counts,
                "total": sum(counts.values()),
                "paused": queue in paused,
                "paused_at": format_timestamp(paused[queue]) if queue in paused else None,
            }
            for queue, counts in sorted(by_queue.items())
        ]

    def throughput(self, minutes: int = 60) -> list[dict[str, Any]]:
        """Jobs that ended per minute over the last ``minutes`` minutes, oldest first, every
        minute present: finished, failed for good, and the other ends (cancelled,
        redundant)."""
        if not 1 <= minutes <= THROUGHPUT_MINUTES_MAX:
            raise InvalidRequest(
                f"minutes must be between 1 and {THROUGHPUT_MINUTES_MAX}, not {minutes}"
            )
        now = self.app.now()
        first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
        slots = {
            first + timedelta(minutes=i): {"finished": 0, "failed": 0, "other": 0}
            for i in range(minutes)
        }
        for minute, state, count in self.app.ended_by_minute(minutes):
            slot = slots.get(minute)
            if slot is None:
                continue
            kind = {"finished": "finished", "permanently_failed": "failed"}.get(state, "other")
            slot[kind] += count
        return [{"at": format_timestamp(at), **counts} for at, counts in slots.items()]

    def workers(self) -> list[dict[str, Any]]:
        """Running workers, from their records (a record older than a few beats is stale)."""
        now = self.app.now()
        found = []
        for record in self.app.workers():
            shown = record.to_dict()
            shown["seconds_since_heartbeat"] = max(
                0.0, round((now - record.heartbeat_at).total_seconds(), 1)
            )
            found.append(shown)
        return found

    def batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.app.get_batch(batch_id)
        with self.app.store.transaction() as tx:
            counts = tx.batch_counts([batch.id])
        return batch_view(batch, counts)

    def batches(self, *, after: str | None = None, limit: int = 50) -> BatchPage:
        """Batches in creation order after the batch ``after`` (an id), each with its jobs
        counted by state; ``next_after`` names the batch to read the next page after."""
        _check_limit(limit)
        with self.app.store.transaction() as tx:
            found = tx.batches(after, limit + 1)
            page = found[:limit]
            counts = tx.batch_counts([batch.id for batch in page])
        views = [batch_view(b, [c for c in counts if c[0] == b.id]) for b in page]
        return BatchPage(views, page[-1].id if len(found) > limit else None)

    def serial_groups(
        self, *, after: str | None = None, limit: int = 50, shown: int = SERIAL_GROUP_SHOWN
    ) -> GroupPage:
        """Serial groups with an active job, in name order after the group ``after``: each
        with its running job(s), its head and its first waiting jobs in the order they run."""
        _check_limit(limit)
        with self.app.store.transaction() as tx:
            found = tx.serial_groups(after, limit + 1)
            page = found[:limit]
            queues = {name: tx.serial_group_queue(name, shown) for name, _ in page}
        groups = [self._group_view(name, active, queues[name]) for name, active in page]
        return GroupPage(groups, page[-1][0] if len(found) > limit else None)

    def serial_group(self, name: str, shown: int = SERIAL_GROUP_DETAIL_SHOWN) -> dict[str, Any]:
        """One serial group's active jobs in the order they run (not_found: none is active)."""
        with self.app.store.transaction() as tx:
            queue = tx.serial_group_queue(name, shown + 1)
        if not queue:
            raise JobNotFound(f"serial group {name} has no active job")
        return self._group_view(name, None, queue[:shown])

    def _group_view(self, name: str, active: int | None, queue: list[Job]) -> dict[str, Any]:
        leased = self.app.lifecycle.states.leased
        processing = [job for job in queue if job.state in leased]
        pending = [job for job in queue if job.state not in leased]
        return {
            "name": name,
            "active": len(queue) if active is None else active,
            "processing": [self.view(job) for job in processing],
            "head": self.view(pending[0]) if pending else None,
            "waiting": [self.view(job) for job in pending[1:]],
        }

    # -- actions -----------------------------------------------------------------------------

    def publish(self, document: Any) -> dict[str, Any]:
        """Publish a job from a publish request (spec/schemas/publish.schema.json), payloads
        and metadata stored as the document wrote them (spec.md#HTTP-003)."""
        if not isinstance(document, dict):
            raise InvalidRequest("send a publish request: a JSON object with 'requests'")
        return self.view(publish_request(self.app, document))

    def operate(self, job_id: str, operation: str) -> dict[str, Any]:
        act = {"cancel": self.app.cancel, "retry": self.app.retry, "requeue": self.app.requeue}
        return self.view(act[operation](job_id))

    def pause(self, queue: str) -> dict[str, Any]:
        changed = self.app.pause_queue(queue)
        return {"queue": queue, "paused": True, "changed": changed}

    def resume(self, queue: str) -> dict[str, Any]:
        changed = self.app.resume_queue(queue)
        return {"queue": queue, "paused": False, "changed": changed}
