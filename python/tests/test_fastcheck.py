"""The fast publish pre-check never accepts what publish.schema.json rejects."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.fastcheck import surely_valid
from conveyor.schemacheck import validator

VALIDATOR = validator("publish")

texts = st.one_of(
    st.sampled_from(["default", "mail", "Mail", "a b", "", "x" * 64, "x" * 65, "g\n", "ok:1"]),
    st.text(max_size=8),
)
labels = st.one_of(texts, st.just("x" * 255), st.just("x" * 256), st.just("tab\there"))
integers = st.one_of(st.integers(-5, 40000), st.booleans(), st.floats(allow_nan=False))
policies = st.one_of(
    st.just(
        {
            "backoff": "exponential",
            "initial_delay_ms": 60000,
            "max_delay_ms": 960000,
            "multiplier": 2,
            "increment_ms": 0,
            "max_attempts": None,
            "notify_after": 5,
            "jitter": 0,
        }
    ),
    st.fixed_dictionaries(
        {
            "backoff": st.sampled_from(["constant", "linear", "exponential", "cubic"]),
            "initial_delay_ms": integers,
            "max_delay_ms": integers,
        },
        optional={"jitter": st.floats(-1, 2), "max_attempts": st.one_of(st.none(), integers)},
    ),
)
# Payloads reach the pre-check already encoded: the codec refused U+0000 and non-finite
# numbers before (see test_bad_input), so generate what the codec lets through.
payloads = st.one_of(st.none(), st.integers(), st.text().filter(lambda s: "\x00" not in s))
requests = st.lists(
    st.fixed_dictionaries({"type": texts}, optional={"payload": payloads}),
    max_size=3,
)
documents = st.fixed_dictionaries(
    {"requests": requests},
    optional={
        "queue": texts,
        "priority": integers,
        "available_at": st.sampled_from(["2026-01-01T00:00:00.000Z", "2026-01-01", "now"]),
        "delay_ms": integers,
        "serial_group": labels,
        "identifier": labels,
        "unique": st.one_of(st.booleans(), st.integers(0, 1)),
        "recurring": st.one_of(st.just({"interval_ms": 999}), st.just({"interval_ms": 60000})),
        "depends_on": st.lists(st.sampled_from(["1", "22", "x y", ""]), max_size=3),
        "tags": st.lists(labels, max_size=3),
        "metadata": st.one_of(st.just({}), st.just([])),
        "retry_policy": policies,
        "surprise": st.just(1),
    },
)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_fast_check_accepts_only_schema_valid_documents(document: dict[str, Any]) -> None:
    if surely_valid(document):
        assert VALIDATOR.is_valid(document), document


def test_fast_check_accepts_an_ordinary_publish() -> None:
    document = {
        "requests": [{"type": "send_email", "payload": {"to": "a@b.c"}}],
        "queue": "mail",
        "priority": 10,
        "available_at": "2026-01-01T00:00:00.000Z",
        "unique": True,
        "identifier": "invoice-42",
        "tags": ["customer:42"],
        "depends_on": [],
        "metadata": {},
    }
    assert surely_valid(document)
    assert VALIDATOR.is_valid(document)
