"""Rejections grouped by cause: one line per rule broken, whatever the rows' values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from voyado_sync.payload import shown
from voyado_sync.reasons import Causes, cause, grouped


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (
            [
                f"Voyado has no contact c-{i} (404 ContactNotFound): the contactId column names "
                "a contact that does not exist, or was merged or deleted"
                for i in range(30)
            ],
            "Voyado has no contact <value> (404 ContactNotFound): the contactId column names "
            "a contact that does not exist, or was merged or deleted",
        ),
        (
            [
                f"2 rows share the unique key review_id=R-{i}; none is sent until it is unique"
                for i in range(10)
            ]
            + ["3 rows share the unique key a=1, b=2; none is sent until it is unique"],
            "rows share a unique key; none is sent until it is unique",
        ),
        (
            [f"contact column email (email): 'x{i}@' is not an email address" for i in range(5)],
            "contact column email (email): <value> is not an email address",
        ),
        (
            [
                f"property rating (column rating): {v} is not an integer; the schema says type "
                "integer"
                for v in ("4.5", "Decimal('2.5')", "'five'", "true")
            ],
            "property rating (column rating): <value> is not an integer; the schema says type "
            "integer",
        ),
        (
            [
                f"no Voyado contact has email {e!r} (ContactNotFound), still absent after 7 days"
                for e in ("a@x.se", "O'Brien@x.se")
            ],
            "no Voyado contact has email <value> (ContactNotFound), still absent after 7 days",
        ),
        (
            [
                "2 Voyado contacts match email 'a@x.se' (MultipleMatches): c1, c2",
                "3 Voyado contacts match email 'b@x.se' (MultipleMatches): c3, c4, c5",
            ],
            "several Voyado contacts match email <value> (MultipleMatches)",
        ),
        (
            [f"property score (column score): breaks rule maximum=5 ({n})" for n in (6, 70)],
            "property score (column score): breaks rule maximum=5 (<value>)",
        ),
    ],
)
def test_rows_rejected_for_one_rule_share_one_cause_without_their_values(
    reasons: list[str], expected: str
) -> None:
    assert {cause(r) for r in reasons} == {expected}


def test_different_rules_stay_apart_and_keep_what_was_wrong() -> None:
    causes = {
        cause(
            "property rating (column rating): 4.5 is not an integer; the schema says type integer"
        ),
        cause("property rating (column rating): 'x' is not a number"),
        cause("property price (column price): 4.5 is not an integer"),
        cause("Voyado answered 400 InvalidPayload: bad"),
        cause("contact column contact_id is NULL"),
    }
    assert len(causes) == 5
    assert "is not an integer; the schema says type integer" in " ".join(causes)


def test_groups_count_rows_and_keep_three_example_keys() -> None:
    items = [
        (f"Voyado has no contact c-{i} (404 ContactNotFound): gone", f"id={i:02d}", "rejected")
        for i in reversed(range(30))  # settled in any order: the first keys are the examples
    ]
    items += [
        (
            f"2 rows share the unique key id=d{i}; none is sent until it is unique",
            f"id=d{i}",
            "rejected",
        )
        for i in range(10)
    ]
    groups = grouped(items)
    assert [(g.count, g.examples) for g in groups] == [
        (30, ["id=00", "id=01", "id=02"]),
        (10, ["id=d0", "id=d1", "id=d2"]),
    ]
    assert groups[0].line() == (
        "rejected (30): Voyado has no contact <value> (404 ContactNotFound): gone "
        "(e.g. id=00, id=01, id=02, ...)"
    )


def test_rejected_and_failed_rows_of_one_cause_are_separate_groups() -> None:
    causes = Causes()
    causes.add("could not reach Voyado (ConnectError) after 8 attempts", "k1", status="failed")
    causes.add("could not reach Voyado (ConnectError) after 8 attempts", "k2", status="failed")
    causes.add("contact column c is NULL", "k3", rows=2)
    assert [(c.status, c.count) for c in causes.ordered()] == [("failed", 2), ("rejected", 2)]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("99.99"), "99.99"),
        (Decimal("1E+2"), "100"),
        (4.5, "4.5"),
        (True, "true"),
        ("Göteborg", "'Göteborg'"),
        ("x" * 200, "'" + "x" * 77 + "...'"),
    ],
)
def test_values_in_reasons_read_as_a_person_writes_them(value: object, text: str) -> None:
    assert shown(value) == text
