"""Paused queues in broker mode: consumers claim nothing of them; resume hands the jobs over.

Spec: PAUSE-001, PAUSE-004.
"""

from __future__ import annotations

from conveyor import Conveyor

from .test_consumer import consumer


def test_a_consumer_leaves_a_paused_queue_alone_until_resumed(app: Conveyor) -> None:
    ran: list[str] = []
    app.register("task", ran.append)
    app.pause_queue("mail")
    held = app.publish("task", "mail", queue="mail")
    app.publish("task", "billing", queue="billing")
    assert consumer(app, stop_when_empty=True).run().jobs == 1
    assert ran == ["billing"]
    assert app.get(held.id).state == "ready"
    assert app.resume_queue("mail") is True  # PAUSE-004: the job is handed over again
    assert consumer(app, stop_when_empty=True).run().jobs == 1
    assert ran == ["billing", "mail"]
