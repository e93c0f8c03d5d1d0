"""Contact identifiers are normalised before lookup, so one person is one lookup and one match."""

from __future__ import annotations

import pytest

from voyado_sync.contacts import normalise


@pytest.mark.parametrize(
    ("key", "raw", "country", "value", "changed"),
    [
        ("email", "  Anna.Svensson@Example.COM ", None, "anna.svensson@example.com", True),
        ("email", "anna@example.com", None, "anna@example.com", False),
        ("mobilePhone", "070-123 45 67", "SE", "+46701234567", True),
        ("mobilePhone", "+46 70 123 45 67", None, "+46701234567", True),
        ("mobilePhone", "+46 70 123 45 67", "NO", "+46701234567", True),
        ("mobilePhone", "+46701234567", None, "+46701234567", False),
        ("mobilePhone", "0046701234567", "SE", "+46701234567", True),
        ("socialSecurityNumber", " 19800101-1234 ", None, "19800101-1234", True),
        ("socialSecurityNumber", "8001011234", None, "8001011234", False),
        ("customKey", " M-1001 ", None, "M-1001", True),
        (
            "contactId",
            "2e40b702-2767-4abe-ae99-aa510108e22b",
            None,
            "2e40b702-2767-4abe-ae99-aa510108e22b",
            False,
        ),
    ],
)
def test_identifiers_are_normalised(
    key: str, raw: str, country: str | None, value: str, changed: bool
) -> None:
    result = normalise(key, raw, default_country=country)
    assert result.value == value
    assert (result.changed is not None) == changed


def test_email_change_is_reported_for_the_summary() -> None:
    assert normalise("email", " Anna@Example.com").changed == "trimmed and lower-cased"


def test_phone_change_is_reported_for_the_summary() -> None:
    assert normalise("mobilePhone", "070-123 45 67", default_country="SE").changed == (
        "converted to E.164"
    )


@pytest.mark.parametrize(
    ("key", "raw", "country", "says"),
    [
        ("email", "anna.example.com", None, "is not an email address"),
        ("email", "anna@example", None, "is not an email address"),
        ("email", "an na@example.com", None, "is not an email address"),
        ("email", "   ", None, "empty"),
        ("mobilePhone", "070-123 45 67", None, "default_country"),
        ("mobilePhone", "call me maybe", "SE", "is not a phone number"),
        ("mobilePhone", "123", "SE", "is not a valid phone number"),
        ("socialSecurityNumber", "1980-01-01", None, "is not a social security number"),
        ("customKey", "", None, "empty"),
    ],
)
def test_unusable_identifiers_raise_with_the_reason(
    key: str, raw: str, country: str | None, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        normalise(key, raw, default_country=country)


def test_social_security_number_is_not_echoed_in_full() -> None:
    with pytest.raises(ValueError) as info:
        normalise("socialSecurityNumber", "19800101-123")
    assert "19800101-123" not in str(info.value)
