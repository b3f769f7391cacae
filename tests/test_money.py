"""bridge.money (ISO and Stripe exponents, exact minor <-> major) and bridge.durations."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.durations import parse_duration
from bridge.money import (
    MAX_MINOR,
    Convention,
    MoneyError,
    currency_code,
    exponent,
    minor_amount,
    to_major,
    to_minor,
)

CONVENTIONS: tuple[Convention, ...] = ("iso", "stripe")

# A sample across every exponent class and both conventions' special cases.
SAMPLE_CODES = (
    "USD",
    "EUR",
    "GBP",
    "JPY",
    "KRW",
    "VND",
    "CLP",
    "KWD",
    "BHD",
    "JOD",
    "OMR",
    "TND",
    "IQD",
    "LYD",
    "ISK",
    "UGX",
    "HUF",
    "TWD",
    "MGA",
    "CLF",
    "UYW",
    "XOF",
)

WIDE = 10**15  # money.MAX_MINOR: no real payment comes near it


# --- exponents -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "iso", "stripe"),
    [
        ("USD", 2, 2),
        ("EUR", 2, 2),
        ("JPY", 0, 0),
        ("KRW", 0, 0),
        ("VND", 0, 0),
        ("KWD", 3, 3),
        ("BHD", 3, 3),
        ("JOD", 3, 3),
        ("OMR", 3, 3),
        ("TND", 3, 3),
        # ISO says three for IQD and LYD; Stripe counts them with two.
        ("IQD", 3, 2),
        ("LYD", 3, 2),
        # Zero-decimal in ISO 4217, but Stripe counts them with two (decimals 00).
        ("ISK", 0, 2),
        ("UGX", 0, 2),
        ("HUF", 2, 2),
        ("TWD", 2, 2),
        # Stripe treats MGA as zero-decimal.
        ("MGA", 2, 0),
        ("CLF", 4, 2),
        ("UYW", 4, 2),
    ],
)
def test_exponent_tables(code: str, iso: int, stripe: int) -> None:
    assert exponent(code, "iso") == iso
    assert exponent(code, "stripe") == stripe


def test_exponent_defaults_to_iso() -> None:
    assert exponent("ISK") == 0
    assert exponent("MGA") == 2


def test_exponent_accepts_lower_case() -> None:
    assert exponent("jpy", "stripe") == 0
    assert exponent("kwd") == 3


def test_exponent_of_unknown_currency_raises() -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        exponent("XYZ", "stripe")


# --- currency codes ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "code"), [("usd", "USD"), ("USD", "USD"), ("Jpy", "JPY")])
def test_currency_code_upper_cases(value: str, code: str) -> None:
    assert currency_code(value) == code


@pytest.mark.parametrize("value", ["XYZ", "US", "USDD", "", "dollars", "€", "\u0131sk", "\u017fek"])
def test_currency_code_unknown_raises(value: str) -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        currency_code(value)


@pytest.mark.parametrize("value", [None, 840, 8.4, b"USD", ["USD"], True])
def test_currency_code_non_string_raises(value: object) -> None:
    with pytest.raises(MoneyError, match="must be a string"):
        currency_code(value)


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


# --- minor amounts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1999, 1999),
        (-500, -500),
        (10**15, 10**15),
        ("1999", 1999),
        (" 1999 ", 1999),
        ("+1e3", 1000),
        ("-42", -42),
        ("1999.00", 1999),
        (Decimal("1580"), 1580),
        (Decimal("12340.000"), 12340),
        (Decimal("-7"), -7),
    ],
)
def test_minor_amount_accepts_integral_values(value: object, expected: int) -> None:
    result = minor_amount(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [True, False])
def test_minor_amount_rejects_booleans(value: bool) -> None:
    with pytest.raises(MoneyError, match="boolean"):
        minor_amount(value)


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        "NaN",
        "Infinity",
        "-inf",
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("sNaN"),
    ],
)
def test_minor_amount_rejects_non_finite(value: object) -> None:
    with pytest.raises(MoneyError, match="finite"):
        minor_amount(value)


@pytest.mark.parametrize("value", [19.99, "19.99", "0.5", Decimal("1.01"), "1e-2"])
def test_minor_amount_rejects_fractions(value: object) -> None:
    with pytest.raises(MoneyError, match="whole number"):
        minor_amount(value)


@pytest.mark.parametrize(
    "value",
    ["", "abc", "12abc", "1,000", "$5", "1_000", "١٩٩٩", "\uff11\uff19\uff19\uff19", "0x10"],
)
def test_minor_amount_rejects_non_numeric_strings(value: str) -> None:
    with pytest.raises(MoneyError, match="not a number"):
        minor_amount(value)


@pytest.mark.parametrize("value", [None, [1], {"amount": 1}, b"12", object()])
def test_minor_amount_rejects_other_types(value: object) -> None:
    with pytest.raises(MoneyError, match="must be a number"):
        minor_amount(value)


# --- to_major ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "code", "convention", "expected"),
    [
        (1999, "USD", "iso", "19.99"),
        (1999, "usd", "stripe", "19.99"),
        (1580, "JPY", "iso", "1580"),
        (1580, "JPY", "stripe", "1580"),
        (12340, "KWD", "iso", "12.340"),
        (12340, "KWD", "stripe", "12.340"),
        (-250, "EUR", "iso", "-2.50"),
        (0, "USD", "iso", "0.00"),
        (5, "USD", "iso", "0.05"),
        (50000, "ISK", "stripe", "500.00"),
        (500, "ISK", "iso", "500"),
        (100, "MGA", "stripe", "100"),
        (100, "MGA", "iso", "1.00"),
        (12345, "CLF", "iso", "1.2345"),
    ],
)
def test_to_major_is_exact(minor: int, code: str, convention: Convention, expected: str) -> None:
    result = to_major(minor, code, convention)
    assert isinstance(result, Decimal)
    assert result == Decimal(expected)
    # Same digits and the currency's number of decimals: 12.340, not 12.34 or 12.3400000001.
    assert str(result) == expected


def test_to_major_unknown_currency_raises() -> None:
    with pytest.raises(MoneyError):
        to_major(100, "ABC")


# --- to_minor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "code", "convention", "expected"),
    [
        ("19.99", "USD", "iso", 1999),
        ("19.9", "USD", "iso", 1990),
        ("19", "USD", "iso", 1900),
        ("-0.01", "USD", "iso", -1),
        ("1580", "JPY", "stripe", 1580),
        ("12.34", "KWD", "iso", 12340),
        ("12.340", "KWD", "stripe", 12340),
        ("500", "ISK", "stripe", 50000),
        ("500", "ISK", "iso", 500),
        (Decimal("19.99"), "USD", "iso", 1999),
        (19.99, "USD", "iso", 1999),
        (0.1, "USD", "iso", 10),
        (7, "EUR", "iso", 700),
        ("1.5E+2", "JPY", "iso", 150),
    ],
)
def test_to_minor_converts_exactly(
    major: object, code: str, convention: Convention, expected: int
) -> None:
    result = to_minor(major, code, convention)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("major", "code", "convention"),
    [
        ("19.999", "USD", "iso"),
        ("0.001", "EUR", "stripe"),
        ("1.5", "JPY", "iso"),
        ("1.5", "JPY", "stripe"),
        ("12.3401", "KWD", "iso"),
        ("500.5", "ISK", "iso"),
        ("100.5", "MGA", "stripe"),
    ],
)
def test_to_minor_too_many_decimals_raises(major: str, code: str, convention: Convention) -> None:
    with pytest.raises(MoneyError, match="more decimals"):
        to_minor(major, code, convention)


@pytest.mark.parametrize(
    "major", ["NaN", "Infinity", "-Infinity", Decimal("NaN"), float("nan"), float("inf")]
)
def test_to_minor_non_finite_raises(major: object) -> None:
    with pytest.raises(MoneyError, match="finite"):
        to_minor(major, "USD")


@pytest.mark.parametrize("major", ["", "abc", "19,99", "1.2.3", "1_999.00", "١٩.٩٩", "19.٩٩"])
def test_to_minor_not_a_number_raises(major: str) -> None:
    with pytest.raises(MoneyError, match="not a number"):
        to_minor(major, "USD")


@pytest.mark.parametrize("major", [True, None, [19.99], b"19.99"])
def test_to_minor_wrong_type_raises(major: object) -> None:
    with pytest.raises(MoneyError, match="must be a number"):
        to_minor(major, "USD")


def test_to_minor_unknown_currency_raises() -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        to_minor("1.00", "ZZZ")


# Beyond the default Decimal context's 28 significant digits, scaleb() rounds: the
# "exact" conversion silently changes the amount instead of refusing it.


def test_to_major_is_exact_beyond_28_digits() -> None:
    # Decimal comparison is exact (no context rounding), unlike Decimal arithmetic.
    assert to_major(10**30 + 1, "USD") == Decimal("10000000000000000000000000000.01")
    # and back it is refused, exactly, rather than rounded: beyond any real payment
    with pytest.raises(MoneyError, match="beyond"):
        to_minor(to_major(10**30 + 1, "USD"), "USD")


def test_to_minor_refuses_a_fraction_hidden_past_28_digits() -> None:
    # 1 + 10**-31 JPY is not a whole yen; rounding it to 1 is a guess.
    with pytest.raises(MoneyError, match="more decimals"):
        to_minor("1.0000000000000000000000000000001", "JPY")


def test_to_minor_refuses_amounts_beyond_the_bound_without_building_them() -> None:
    with pytest.raises(MoneyError, match="beyond"):
        to_minor("12345678901234567890123456789.01", "USD")
    with pytest.raises(MoneyError, match="beyond"):
        to_minor("1e999999999", "USD")  # refused from its exponent: no huge integer is built
    assert to_minor("9999999999999.99", "USD") == 999999999999999


# --- properties ----------------------------------------------------------------------------

minors = st.integers(min_value=-WIDE, max_value=WIDE)
codes = st.sampled_from(SAMPLE_CODES)
conventions = st.sampled_from(CONVENTIONS)


@given(minor=minors, code=codes, convention=conventions)
def test_round_trip_minor_major_minor(minor: int, code: str, convention: Convention) -> None:
    major = to_major(minor, code, convention)
    assert isinstance(major, Decimal)
    back = to_minor(major, code, convention)
    assert type(back) is int
    assert back == minor


@given(minor=minors, code=codes, convention=conventions)
def test_round_trip_through_decimal_text(minor: int, code: str, convention: Convention) -> None:
    # What a body template or a log line would carry: the Decimal's text, never a float.
    text = str(to_major(minor, code, convention))
    assert to_minor(text, code, convention) == minor
    assert to_minor(text.lower(), code.lower(), convention) == minor


@given(minor=minors, code=codes, convention=conventions)
def test_to_major_scales_by_exactly_the_exponent(
    minor: int, code: str, convention: Convention
) -> None:
    major = to_major(minor, code, convention)
    places = exponent(code, convention)
    assert major * (10**places) == minor
    # A currency's amounts always show its number of decimals (0.05, 12.340, 1580).
    assert major.as_tuple().exponent == -places


@given(minor=minors, code=codes, convention=conventions, extra=st.integers(1, 9))
def test_one_more_decimal_is_refused(
    minor: int, code: str, convention: Convention, extra: int
) -> None:
    # A digit past the currency's exponent can never be sent without rounding.
    text = str(to_major(minor, code, convention))
    text += f"{extra}" if "." in text else f".{extra}"
    with pytest.raises(MoneyError, match="more decimals"):
        to_minor(text, code, convention)


@pytest.mark.parametrize("value", [10**15 + 1, -(10**15) - 1, str(2**63), 10**20])
def test_minor_amount_refuses_amounts_beyond_any_payment(value: object) -> None:
    # no real payment comes near 10**15 minor units, and 64-bit stores must hold every amount
    with pytest.raises(MoneyError, match="beyond"):
        minor_amount(value)


@given(minor=st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR))
def test_minor_amount_accepts_its_own_text(minor: int) -> None:
    assert minor_amount(minor) == minor
    assert minor_amount(str(minor)) == minor
    assert minor_amount(Decimal(minor)) == minor


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5m", 300),
        ("3d", 259200),
        ("2h", 7200),
        ("10s", 10),
        ("10", 10),
        ("1.5s", 1.5),
        (" 5 m ", 300),
        ("0", 0),
        (0.2, 0.2),
        (0, 0),
        (300, 300),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert type(result) is float
    assert result == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "5 minutes",
        "5w",
        "5ms5",
        -1,
        -0.1,
        float("nan"),
        float("inf"),
        True,
        False,
        None,
        [5],
        Decimal("5"),
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_parse_duration_rejects_a_huge_integer_with_value_error() -> None:
    # The docstring promises ValueError; pydantic turns only ValueError into a problem line.
    with pytest.raises(ValueError):
        parse_duration(10**400)
