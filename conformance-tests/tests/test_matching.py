from __future__ import annotations

from conveyor_conformance.matching import match


def resolve(kind: str, name: str) -> str:
    return {"job": {"a": "17"}, "batch": {"b": "3"}}[kind][name]


def test_partial_objects_and_null_for_missing() -> None:
    assert match({"state": "ready", "lease": None}, {"state": "ready", "id": "1"}) == []
    assert match({"state": "ready"}, {"state": "finished"})


def test_booleans_are_not_numbers() -> None:
    assert match(True, 1)
    assert match(1, 1.0) == []


def test_matchers() -> None:
    assert match({"$job": "a"}, "17", resolve=resolve) == []
    assert match({"$job": "a"}, "18", resolve=resolve)
    assert match({"$range": [1, 3]}, 3) == []
    assert match({"$range": [1, 3]}, 4)
    assert (
        match(
            {"$time_range": ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z"]},
            "2026-01-01T00:00:00.500Z",
        )
        == []
    )
    assert match({"$unordered": [1, 2]}, [2, 1]) == []
    assert match({"$unordered": [1, 2]}, [2, 2])
    assert match({"$contains": [{"id": "x"}]}, [{"id": "y"}, {"id": "x", "n": 1}]) == []
    assert match({"$len": 2}, [0, 0]) == []
    assert match({"$any": True}, None) == []


def test_typed_values_are_literal_objects() -> None:
    assert match({"$bytes": "aGk="}, {"$bytes": "aGk="}) == []
    assert match({"$bytes": "aGk="}, {"$bytes": "aGl="})
