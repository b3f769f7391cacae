"""Money: ISO 4217 currencies, minor-unit exponents, minor <-> major in Decimal.

Amounts travel as integer minor units; conversion to major units is exact
Decimal arithmetic. A float appears only when a JSON body is finally encoded.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal, InvalidOperation
from typing import Literal

Convention = Literal["iso", "stripe"]

# Active ISO 4217 codes (plus a few recently retired ones processors still send).
_ISO_CODES = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BOV",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHE",
        "CHF",
        "CHW",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "COU",
        "CRC",
        "CUC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HRK",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MXV",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SLL",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "USN",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VED",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
        "ZWL",
    ]
)

_ISO_ZERO = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "UYI",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
_ISO_THREE = frozenset(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"])
_ISO_FOUR = frozenset(["CLF", "UYW"])

# Stripe's own list: zero-decimal currencies are sent whole; BHD..TND have three
# decimals; ISK, UGX, HUF and TWD are counted with two (their decimals are 00).
_STRIPE_ZERO = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
_STRIPE_THREE = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


class MoneyError(ValueError):
    """An amount or currency that cannot be sent without guessing."""


def currency_code(value: object) -> str:
    """The upper-case ISO 4217 code, or MoneyError for anything else."""
    if not isinstance(value, str):
        raise MoneyError(f"currency must be a string, got {type(value).__name__}")
    code = value.strip().upper()
    # ASCII only: upper() makes ISK of "\u0131sk" (a dotless i), SEK of "\u017fek" (a long s)
    if not value.isascii() or code not in _ISO_CODES:
        raise MoneyError(f"unknown currency {value[:16]!r} (not an ISO 4217 code)")
    return code


def exponent(currency: str, convention: Convention = "iso") -> int:
    """How many decimals one major unit has in this convention."""
    code = currency_code(currency)
    if convention == "stripe":
        if code in _STRIPE_ZERO:
            return 0
        return 3 if code in _STRIPE_THREE else 2
    if code in _ISO_ZERO:
        return 0
    if code in _ISO_THREE:
        return 3
    return 4 if code in _ISO_FOUR else 2


MAX_MINOR = 10**15  # a quadrillion minor units: beyond any real payment, and within 64 bits


def minor_amount(value: object) -> int:
    """An integer amount in minor units: an int, an integral string, or an integral Decimal,
    at most MAX_MINOR in size."""
    amount = _minor_amount(value)
    if abs(amount) > MAX_MINOR:
        raise MoneyError(f"amount is beyond {MAX_MINOR} minor units")
    return amount


# a number's text as JSON and the processors write it: ASCII digits, an optional sign, point and
# exponent (Decimal itself also reads "1_000" and other scripts' digits, such as "١٩٩٩")
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


def _decimal(value: str | int | float | Decimal) -> Decimal:
    """``value`` as a finite Decimal; text must be a plain number (``_NUMBER_TEXT``), and a
    float is read as its shortest round-trip text (19.99, not 19.989999...)."""
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise MoneyError(f"amount {str(value)[:32]!r} is not a number") from None
    if not number.is_finite():
        raise MoneyError("amount is not a finite number")
    if isinstance(value, str) and not _NUMBER_TEXT.fullmatch(value):
        raise MoneyError(f"amount {value[:32]!r} is not a number")
    return number


def _minor_amount(value: object) -> int:
    if isinstance(value, bool):
        raise MoneyError("amount must be a number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise MoneyError("amount is not a finite number")
        if not value.is_integer():
            raise MoneyError(f"amount {value!r} is not a whole number of minor units")
        return int(value)
    if isinstance(value, (str, Decimal)):
        number = _decimal(value)
        if number.adjusted() > 15:  # before any integer is built from it (1e999999999)
            raise MoneyError(f"amount is beyond {MAX_MINOR} minor units")
        if number != number.to_integral_value():
            raise MoneyError(f"amount {str(value)[:32]!r} is not a whole number of minor units")
        return int(number)
    raise MoneyError(f"amount must be a number, got {type(value).__name__}")


# a context that never rounds: as many digits and as wide an exponent as decimal allows
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def _shift(number: Decimal, places: int) -> Decimal:
    """``number * 10**places``, exact whatever its size (moves the exponent, never rounds)."""
    return number.scaleb(places, _EXACT)


def to_major(minor: int, currency: str, convention: Convention = "iso") -> Decimal:
    """Minor units to an exact Decimal in major units: 1999 USD -> 19.99."""
    return _shift(Decimal(minor), -exponent(currency, convention))


def to_minor(major: object, currency: str, convention: Convention = "iso") -> int:
    """A major-unit amount (decimal string or number) to integer minor units, exactly."""
    if isinstance(major, bool) or not isinstance(major, (str, int, float, Decimal)):
        raise MoneyError(f"amount must be a number, got {type(major).__name__}")
    number = _decimal(major)
    if number.adjusted() + exponent(currency, convention) > 15:
        raise MoneyError(f"amount is beyond {MAX_MINOR} minor units")
    sign, digits, exp = _shift(number, exponent(currency, convention)).as_tuple()
    assert isinstance(exp, int)
    if exp < 0 and any(digits[exp:]):
        raise MoneyError(f"amount {str(major)[:32]!r} has more decimals than {currency} allows")
    whole = int("".join(map(str, digits[: len(digits) + exp] if exp < 0 else digits)) or "0")
    if exp > 0:
        whole *= 10**exp
    return -whole if sign else whole
