"""The dashboard in headless Chromium: list -> detail -> retry (the state changes), pausing a
queue, a serial group and a batch with their jobs, keyboard and label basics, and no console
error on any page. Screenshots of every page go to ``python/build/screenshots`` (or
``CONVEYOR_SCREENSHOTS``); the docs use four of them.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``just setup``); playwright drives it
and downloads no browser. Without Chromium the test is skipped, except under CI=true.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Call, Conveyor
from conveyor.presence import Presence

CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(
    os.environ.get("CONVEYOR_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "build" / "screenshots"
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _need_browser() -> None:
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium not found at {CHROMIUM} (apt-get install chromium, or just setup)"
    else:
        try:
            import playwright  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError as error:
            problem = f"{error.name} is not installed (pip install -e 'python[dev]')"
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


@pytest.fixture
def refresh_seconds() -> float:
    return 0


@pytest.fixture
def server(conveyor_app: Conveyor, refresh_seconds: float) -> Iterator[str]:
    """The web app on a free loopback port, served by uvicorn in a thread."""
    _need_browser()
    import uvicorn

    from conveyor.web import create_app

    web = create_app(
        conveyor_app,
        token=None,
        username=None,
        password=None,
        refresh_seconds=refresh_seconds,
    )
    config = uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not running.started:
        assert thread.is_alive(), "the web server did not start"
        assert time.monotonic() < deadline, "the web server did not start within 15 s"
        time.sleep(0.01)
    port = running.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(timeout=15)


def test_list_detail_retry_and_pause(server: str, conveyor_app: Conveyor) -> None:
    from playwright.sync_api import expect, sync_playwright

    app = conveyor_app
    for n in range(3):
        app.publish("mail.send", {"to": f"user{n}@example.com"}, tags=[f"customer:{n}"])
    app.publish("invoice.build", {"n": 7}, tags=["customer:1"])
    broken = app.publish("report.broken", "the customer 42 does not exist")
    app.process(handle_signals=False)
    assert app.get(broken.id).state == "permanently_failed"
    for n in range(2):
        app.publish("mail.send", {"to": f"later{n}@example.com"})
    app.publish("invoice.build", {"n": 8}, delay=3600)
    # a serial group with a running job, the next one and one after; a sealed batch
    grouped = [
        app.publish("invoice.build", {"n": n}, serial_group="account:42", priority=p)
        for n, p in ((1, 0), (2, 5), (3, 1))
    ]
    [running] = app.claim("web-demo:4242", queues=["billing"])
    assert running.id == grouped[0].id
    batch = app.open_batch(Call("invoice.build", {"n": 99}))
    parts = [
        app.publish("mail.send", {"to": f"part{n}@example.com"}, batch=batch) for n in range(3)
    ]
    app.seal_batch(batch)
    app.cancel(parts[2].id)

    presence = Presence(app.store, app.now, "web-demo:4242", ["mail", "billing"], 4, every=3600)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on(
            "console",
            lambda message: (
                problems.append(f"{message.text} at {message.location}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        try:
            page.goto(f"{server}/")
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)

            # keyboard: the first Tab reaches the skip link
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"

            page.get_by_role("link", name="Jobs", exact=True).click()
            expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
            page.get_by_label("State").select_option("permanently_failed")  # labelled fields
            page.get_by_role("button", name="Filter").click()
            link = page.get_by_role("link", name=broken.id, exact=True)
            expect(link).to_be_visible()
            page.goto(f"{server}/jobs")
            page.screenshot(path=str(SCREENSHOTS / "jobs.png"), full_page=True)
            page.go_back()
            link.click()

            expect(page.get_by_role("heading", name=f"Job {broken.id}")).to_be_visible()
            expect(page.locator("#job-state")).to_have_text("permanently_failed")
            expect(page.get_by_text("the customer 42 does not exist").first).to_be_visible()
            page.get_by_text("Traceback").first.click()
            page.screenshot(path=str(SCREENSHOTS / "job.png"), full_page=True)
            page.get_by_text("Traceback").first.click()
            page.get_by_role("button", name="Retry").click()
            expect(page.locator("#job-state")).to_have_text("ready")
            assert app.get(broken.id).state == "ready"

            page.get_by_role("link", name="Queues").click()
            row = page.locator("tr[data-queue=mail]")
            row.get_by_role("button", name="Pause").click()
            expect(row.get_by_text("paused", exact=True)).to_be_visible()
            assert list(app.paused_queues()) == ["mail"]
            page.screenshot(path=str(SCREENSHOTS / "queues.png"), full_page=True)
            row.get_by_role("button", name="Resume").click()
            expect(row.get_by_text("active", exact=True)).to_be_visible()
            assert app.paused_queues() == {}

            presence.start(lambda: [broken.id, running.id])
            page.get_by_role("link", name="Workers").click()
            expect(page.get_by_text("web-demo:4242")).to_be_visible()
            expect(page.get_by_role("link", name=broken.id, exact=True)).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "workers.png"), full_page=True)

            # serial groups: the running job, then the rest in (priority, sequence) order
            page.get_by_role("link", name="Serial groups").click()
            expect(page.get_by_role("heading", name="Serial groups")).to_be_visible()
            expect(page.get_by_role("link", name="Serial groups")).to_have_attribute(
                "aria-current", "page"
            )
            row = page.get_by_role("row").filter(has_text="account:42")
            expect(row.get_by_role("cell").nth(1)).to_have_text(running.id)
            expect(row.get_by_role("cell").nth(2)).to_contain_text(grouped[2].id)
            page.screenshot(path=str(SCREENSHOTS / "serial_groups.png"), full_page=True)
            page.get_by_role("link", name="account:42", exact=True).focus()
            page.keyboard.press("Enter")  # links work from the keyboard
            expect(page.get_by_role("heading", name="Serial group account:42")).to_be_visible()
            order = page.locator("a.job-link").all_text_contents()
            assert order == [grouped[0].id, grouped[2].id, grouped[1].id]
            page.screenshot(path=str(SCREENSHOTS / "serial_group.png"), full_page=True)
            page.get_by_role("link", name=grouped[1].id, exact=True).click()
            expect(page.get_by_role("heading", name=f"Job {grouped[1].id}")).to_be_visible()
            page.get_by_role("link", name="account:42", exact=True).click()
            expect(page.get_by_role("heading", name="Serial group account:42")).to_be_visible()

            # batches: counts by state and the completion job; the batch's jobs
            page.get_by_role("link", name="Batches").click()
            expect(page.get_by_role("heading", name="Batches")).to_be_visible()
            row = page.get_by_role("row").filter(has_text="invoice.build")
            expect(row).to_contain_text("cancelled 1")
            expect(row).to_contain_text("ready 2")
            page.screenshot(path=str(SCREENSHOTS / "batches.png"), full_page=True)
            row.get_by_role("link", name=batch.id, exact=True).click()
            expect(page.get_by_role("heading", name=f"Batch {batch.id}")).to_be_visible()
            assert page.locator("a.job-link").all_text_contents() == [p.id for p in parts]
            page.screenshot(path=str(SCREENSHOTS / "batch.png"), full_page=True)
            page.get_by_role("link", name=parts[0].id, exact=True).click()
            page.get_by_role("link", name=batch.id, exact=True).click()
            expect(page.get_by_role("heading", name=f"Batch {batch.id}")).to_be_visible()
        finally:
            presence.stop()
            browser.close()
    assert problems == []


@pytest.mark.parametrize("refresh_seconds", [0.2])
def test_pages_refresh_by_polling(server: str, conveyor_app: Conveyor) -> None:
    from playwright.sync_api import expect, sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{server}/")
            expect(page.get_by_text("No jobs yet.")).to_be_visible()
            conveyor_app.publish("mail.send", queue="urgent")
            # no reload: the page's polling brings the new queue in
            expect(page.get_by_role("link", name="urgent")).to_be_visible(timeout=10_000)
        finally:
            browser.close()
    assert problems == []
