"""The Django example project on PostgreSQL: publishing joins Django's transaction, and the
manage.py commands run workers and report status."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest

from ..conftest import TEST_PREFIX, require_service
from .examples import EXAMPLES

PROJECT = EXAMPLES / "django_shop"


@pytest.fixture(scope="module")
def django_project() -> Iterator[Any]:
    """The example project set up in this process, its order table created (and dropped)."""
    require_service("postgresql")
    os.environ["SHOP_TABLE_PREFIX"] = TEST_PREFIX
    os.environ["DJANGO_SETTINGS_MODULE"] = "shop_site.settings"
    sys.path.insert(0, str(PROJECT))
    import django
    from django.db import connection

    django.setup()
    from shop.models import Order

    with connection.schema_editor() as editor:
        editor.execute(f'DROP TABLE IF EXISTS "{Order._meta.db_table}"')
        editor.create_model(Order)
    from conveyor.integrations.django import get_app

    yield get_app()
    with connection.schema_editor() as editor:
        editor.delete_model(Order)
    get_app().close()
    connection.close()
    sys.path.remove(str(PROJECT))


@pytest.fixture
def app(django_project: Any) -> Any:
    from shop.models import Order

    django_project.store.erase()
    Order.objects.all().delete()
    return django_project


def test_the_job_exists_if_and_only_if_the_django_transaction_commits(app: Any) -> None:
    from django.db import transaction

    from conveyor.integrations.django import publish

    def publish_then_fail() -> None:
        with transaction.atomic():
            publish("shop.send_receipt", {"order_id": 1})
            raise LookupError("the request failed after the publish")

    with pytest.raises(LookupError):
        publish_then_fail()
    assert app.jobs() == []
    with transaction.atomic():
        job = publish("shop.send_receipt", {"order_id": 2}, tags=["order:2"])
        assert app.jobs() == []  # not visible to others before Django commits
    assert [(j.id, j.tags) for j in app.jobs()] == [(job.id, ("order:2",))]
    outside = publish("shop.send_receipt", {"order_id": 3})  # autocommit: stored at once
    assert app.get(outside.id).state == "ready"


def test_the_view_answers_202_and_the_worker_command_runs_the_job(app: Any) -> None:
    from django.core.management import call_command
    from django.test import Client
    from shop.models import Order

    client = Client()
    refused = client.post("/orders", {"email": "no-at-sign"}, content_type="application/json")
    assert refused.status_code == 422
    assert (Order.objects.count(), app.jobs()) == (0, [])

    accepted = client.post("/orders", {"email": "a@example.org"}, content_type="application/json")
    assert accepted.status_code == 202
    location = accepted["Location"]
    assert client.get(location).json()["state"] == "ready"

    call_command("conveyor_process")
    assert client.get(location).json()["state"] == "finished"
    assert Order.objects.get().receipt_sent

    out = StringIO()
    sys.stdout, saved = out, sys.stdout
    try:
        call_command("conveyor_status")
    finally:
        sys.stdout = saved
    assert "finished" in out.getvalue()


def test_manage_py_runs_the_conveyor_commands(app: Any) -> None:
    environment = {**os.environ, "SHOP_TABLE_PREFIX": TEST_PREFIX}
    done = subprocess.run(
        [sys.executable, "manage.py", "conveyor_status"],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    helped = subprocess.run(
        [sys.executable, "manage.py", "conveyor_consume", "--help"],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "--queue" in helped.stdout, helped.stderr
