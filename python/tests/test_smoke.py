"""The canonical serial-group case on every backend (spec GROUP rules)."""

from __future__ import annotations

from conveyor import Conveyor


def test_canonical_serial_group_order_is_a_b_d_e_g_c_f(app: Conveyor) -> None:
    ran: list[str] = []
    app.register("echo", lambda text: ran.append(text))  # noqa: PLW0108 - binds the payload key
    for letter, priority in zip("abcdefg", [1, 1, 2, 1, 1, 2, 1], strict=True):
        app.publish("echo", {"text": letter}, priority=priority, serial_group="g")

    stats = app.process()

    assert ran == list("abdegcf")
    assert stats.outcomes == {"finished": 7}
