"""Flask: an extension holding the Conveyor app, a job status blueprint and a 202 response.

``FlaskConveyor(flask_app, app)`` or, with an application factory, ``conveyor =
FlaskConveyor()`` then ``conveyor.init_app(flask_app, app)``. Without ``app`` the Flask
config names it: ``CONVEYOR_APP`` (``module:attribute``) or ``CONVEYOR_URL`` (an app
without handlers over that store). Publishing in the request's transaction is
``conveyor.app.publish(..., connection=connection_or_session)``, as anywhere else.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, url_for

from ..app import Conveyor
from ..errors import ConfigurationError, JobNotFound
from ..model import Job

EXTENSION = "conveyor"


def _job_status(job_id: str) -> Response | tuple[Response, int]:
    try:
        job = _extension().app.get(job_id)
    except JobNotFound as error:
        return jsonify({"detail": str(error)}), 404
    return jsonify(
        {
            "id": job.id,
            "state": job.state,
            "queue": job.queue,
            "created_at": job.created_at.isoformat(),
            "updated_at": job.updated_at.isoformat(),
            "attempts": job.attempts,
        }
    )


def _extension() -> FlaskConveyor:
    found = current_app.extensions.get(EXTENSION)
    if not isinstance(found, _State):
        raise ConfigurationError(
            "this Flask app has no Conveyor: call FlaskConveyor(flask_app, app) or "
            "conveyor.init_app(flask_app, app) where the app is created"
        )
    return found.extension


class _State:
    def __init__(self, extension: FlaskConveyor, app: Conveyor) -> None:
        self.extension = extension
        self.app = app


class FlaskConveyor:
    """The Flask extension. ``jobs_url`` is where the job status route is mounted (None:
    no route; :meth:`accepted` then needs ``location=``)."""

    def __init__(
        self,
        flask_app: Flask | None = None,
        app: Conveyor | None = None,
        *,
        jobs_url: str | None = "/jobs",
    ) -> None:
        self.jobs_url = jobs_url
        if flask_app is not None:
            self.init_app(flask_app, app)

    def init_app(self, flask_app: Flask, app: Conveyor | None = None) -> None:
        """Attach ``app`` (or the one the config names) to ``flask_app``; the app is closed
        when the process ends, not per request."""
        conveyor = app if app is not None else _from_config(flask_app.config)
        flask_app.extensions[EXTENSION] = _State(self, conveyor)
        if self.jobs_url is not None:
            blueprint = Blueprint(EXTENSION, __name__, url_prefix=self.jobs_url)
            blueprint.add_url_rule("/<job_id>", "job_status", _job_status, methods=["GET"])
            flask_app.register_blueprint(blueprint)

    @property
    def app(self) -> Conveyor:
        """The current Flask app's Conveyor app."""
        state = current_app.extensions.get(EXTENSION)
        if not isinstance(state, _State):
            _extension()  # raises, naming the fix
        assert isinstance(state, _State)
        return state.app

    def publish(self, type: str, payload: Any = None, **options: Any) -> Job:
        """:meth:`Conveyor.publish` on the current app (``connection=`` joins a transaction)."""
        return self.app.publish(type, payload, **options)

    def accepted(self, job: Job, location: str | None = None) -> Response:
        """``202 Accepted`` with ``Location`` naming the job's status URL."""
        if location is None:
            if self.jobs_url is None:
                raise ConfigurationError(
                    "accepted() builds Location from the job status route, which is off "
                    "(jobs_url=None); pass location="
                )
            location = url_for(f"{EXTENSION}.job_status", job_id=job.id, _external=True)
        response = jsonify({"id": job.id, "state": job.state})
        response.status_code = 202
        response.headers["Location"] = location
        return response


def _from_config(config: Any) -> Conveyor:
    spec = config.get("CONVEYOR_APP")
    if spec:
        from ..cli.discovery import load_app

        return load_app(str(spec))
    url = config.get("CONVEYOR_URL")
    if url:
        return Conveyor(str(url))
    raise ConfigurationError(
        "FlaskConveyor has no app: pass one to init_app, or set CONVEYOR_APP "
        "(module:attribute) or CONVEYOR_URL in the Flask config"
    )
