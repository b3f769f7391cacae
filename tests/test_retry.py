"""RetryPolicy as a table of waits, and every form of Retry-After."""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.retry import RetryPolicy, parse_retry_after, server_wait

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("attempt", "base"),
    [
        (1, 5.0),
        (2, 10.0),
        (3, 20.0),
        (4, 40.0),
        (10, 2560.0),
        (13, 20480.0),
        (14, 21600.0),
        (30, 21600.0),
    ],
)
def test_waits_double_from_initial_up_to_the_cap_with_equal_jitter(
    attempt: int, base: float
) -> None:
    policy = RetryPolicy()
    assert policy.wait(attempt, rand=lambda: 0.0) == base / 2
    assert policy.wait(attempt, rand=lambda: 1.0) == base


def test_the_defaults_keep_trying_for_about_three_days() -> None:
    policy = RetryPolicy()
    age, attempt = 0.0, 0
    while True:
        attempt += 1
        wait = policy.next_wait(attempt, age, rand=lambda: 1.0)
        if wait is None:
            break
        age += wait
    assert 2.5 * 86400 < age <= 3 * 86400
    assert attempt <= policy.max_attempts


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, initial=1, max_interval=10, max_age=1000)
    assert policy.next_wait(2, 0) is not None
    assert policy.next_wait(3, 0) is None


def test_gives_up_when_the_next_try_would_pass_max_age() -> None:
    policy = RetryPolicy(initial=10, max_interval=10, max_age=100)
    assert policy.next_wait(1, 92, rand=lambda: 1.0) is None
    assert policy.next_wait(1, 92, rand=lambda: 0.0) == 5.0


def test_the_server_wait_wins_when_longer() -> None:
    policy = RetryPolicy(initial=1, max_interval=1)
    assert policy.next_wait(1, 0, server=30.0, rand=lambda: 1.0) == 30.0
    assert policy.next_wait(1, 0, server=0.1, rand=lambda: 1.0) == 1.0


@pytest.mark.parametrize(
    ("value", "wait"),
    [
        ("120", 120.0),  # delta seconds
        ("1.5", 1.5),
        (str(int(NOW) + 90), 90.0),  # epoch seconds (Voucherify's X-Rate-Limit-Retry)
        (str(int(NOW * 1000) + 2500), 2.5),  # epoch milliseconds (Dub)
        (email.utils.formatdate(NOW + 60, usegmt=True), 60.0),  # HTTP date
        (str(int(NOW) - 100), 0.0),  # in the past: now
        ("soon", None),
        ("", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str, wait: float | None) -> None:
    result = parse_retry_after(value, NOW)
    assert result == (None if wait is None else pytest.approx(wait, abs=1e-3))


def test_server_wait_reads_each_vendor_header() -> None:
    assert server_wait({"retry-after": "7"}, NOW) == 7.0
    assert server_wait({"x-rate-limit-retry": str(int(NOW) + 30)}, NOW) == 30.0
    assert server_wait({"ratelimit-reset": "12"}, NOW) == 12.0
    assert server_wait({"x-ratelimit-reset": str(int(NOW * 1000) + 4000)}, NOW) == 4.0
    assert server_wait({"content-type": "application/json"}, NOW) is None


@given(st.text(max_size=80))
def test_any_header_value_parses_or_is_ignored(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or result >= 0.0


def test_a_large_max_attempts_never_overflows_the_backoff() -> None:
    # 2.0 ** 1024 overflows a float: a table allowing that many attempts must still wait
    policy = RetryPolicy(initial=1, max_interval=60, max_attempts=100_000, max_age=10**9)
    for attempt in (1024, 1025, 5_000, 99_999):
        wait = policy.next_wait(attempt, 0.0, rand=lambda: 1.0)
        assert wait == 60


@pytest.mark.parametrize("server", [4 * 86400.0, 999_999_999.0])
def test_a_server_wait_past_max_age_is_bounded_by_it_not_a_reason_to_give_up(
    server: float,
) -> None:
    policy = RetryPolicy(initial=5, max_interval=60, max_age=3 * 86400)
    # a 429 at once asking for more than the whole window: one more try at its end
    assert policy.next_wait(1, 0.0, server=server, rand=lambda: 1.0) == 3 * 86400
    assert policy.next_wait(2, 1000.0, server=server, rand=lambda: 1.0) == 3 * 86400 - 1000
    # at the end of the window, no time is left for another try
    assert policy.next_wait(3, 3 * 86400, server=server, rand=lambda: 1.0) is None
    # a backoff that alone passes max_age still gives up
    assert policy.next_wait(3, 3 * 86400 - 1, server=server, rand=lambda: 1.0) is None
