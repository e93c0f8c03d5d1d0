"""Rejection reasons grouped by cause, so that 30 unknown contacts are one line, not 30.

A reason names the row's values (``'x' is not an email address``, ``2 rows share the unique
key review_id=R-1``); its *cause* is the same text with every value masked, so every row
rejected for the same rule shares one cause. The run's summary (``sync/result.py``) and
``voyado-sync rejected`` group with :func:`cause` alone; the full reasons stay in the ledger.
Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: What a masked value reads as.
VALUE = "<value>"
MAX_EXAMPLES = 3
MAX_CAUSE = 200

# Python reprs of values (reasons written before values were shown as a person writes them).
_REPRS = re.compile(r"\b(?:Decimal|UUID|datetime\.(?:datetime|date|time))\([^()]*\)")
# Quoted text: repr() of a string, or a value Voyado quoted in its message.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
# Which values a sentence names, each replaced by a mask; applied in order after quoting.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # "2 rows share the unique key id=1, other=2; none is sent until it is unique"
    (re.compile(r"^\d+ rows share the unique key .*?; "), "rows share a unique key; "),
    # "3 Voyado contacts match email <value> (MultipleMatches): c1, c2, c3"
    (re.compile(r"^(?:\d+|several) Voyado contacts match"), "several Voyado contacts match"),
    (re.compile(r"\(MultipleMatches\):.*$"), "(MultipleMatches)"),
    # "Voyado has no contact 1f0c... (404 ContactNotFound)", "contact 1f0c... no longer exists"
    (re.compile(r"\bno contact \S+ \("), f"no contact {VALUE} ("),
    (re.compile(r"\bcontact \S+ no longer exists"), f"contact {VALUE} no longer exists"),
    (re.compile(r"\bno longer knows contact \S+;"), f"no longer knows contact {VALUE};"),
    # "property rating (column rating): 4.5 is not an integer": an unquoted value (a number,
    # a boolean, an instant) before the rule it breaks.
    (
        re.compile(
            r"(: |^)(?!<value>)[^\s;:(]+(?= is not | is a boolean, | cannot be sent | breaks )"
        ),
        rf"\1{VALUE}",
    ),
    # "breaks rule maximum=5 (7)": the rule stays, the row's value goes.
    (re.compile(r"(breaks rule \S+) \([^;]*\)"), rf"\1 ({VALUE})"),
)


def cause(reason: str) -> str:
    """The reason with every value of the row masked: the key rejections are grouped by.

    The rule, the property, the column and Voyado's status and error code stay, so a type
    error still says which property and type.
    """
    text = _QUOTED.sub(VALUE, _REPRS.sub(VALUE, " ".join(reason.split())))
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_CAUSE else text[: MAX_CAUSE - 3] + "..."


@dataclass
class Cause:
    """Rows that share one cause: how many, and the keys of the first few."""

    cause: str
    status: str = "rejected"
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, row_key: str, rows: int = 1) -> None:
        self.count += rows
        # The first keys in order, not in the order rows happened to settle (requests run
        # concurrently): the same rows show the same examples every time.
        if row_key not in self.examples:
            self.examples = sorted([*self.examples, row_key])[:MAX_EXAMPLES]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "status": self.status,
            "count": self.count,
            "examples": list(self.examples),
        }

    def line(self) -> str:
        """``rejected (30): <cause> (e.g. k1, k2, k3)``."""
        more = "" if self.count <= len(self.examples) else ", ..."
        examples = f" (e.g. {', '.join(self.examples)}{more})" if self.examples else ""
        return f"{self.status} ({self.count}): {self.cause}{examples}"


class Causes:
    """Reasons grouped by (status, cause), in order of first appearance."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], Cause] = {}

    def add(self, reason: str, row_key: str, *, status: str = "rejected", rows: int = 1) -> None:
        text = cause(reason)
        group = self._by.get((status, text))
        if group is None:
            group = self._by[(status, text)] = Cause(text, status)
        group.add(row_key, rows)

    def __bool__(self) -> bool:
        return bool(self._by)

    def __len__(self) -> int:
        return len(self._by)

    def ordered(self) -> list[Cause]:
        """Largest group first; ties by cause, so the output is stable."""
        return sorted(self._by.values(), key=lambda c: (-c.count, c.status, c.cause))

    def counts(self) -> dict[str, int]:
        return {c.cause: c.count for c in self.ordered()}


def grouped(items: Iterable[tuple[str, str, str]]) -> list[Cause]:
    """(reason, row key, status) triples grouped by cause, largest first."""
    causes = Causes()
    for reason, row_key, status in items:
        causes.add(reason, row_key, status=status)
    return causes.ordered()
