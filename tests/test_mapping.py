"""The expression compiler agrees with jmespath's own interpreter, on every built-in expression."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import mapping, sources
from bridge.destinations.common import templates


def builtin_expressions() -> list[str]:
    found: set[str] = set()
    for kind in sources.SOURCES:
        for rule in sources.rules(kind).values():
            found.update(expr.text for expr in rule.fields.values())
            found.update(skip.when.text for skip in rule.skips)

    def leaves(node: Any) -> None:
        if isinstance(node, mapping.Expression):
            found.add(node.text)
        elif isinstance(node, dict):
            for child in node.values():
                leaves(child)

    for kind in ("dub", "umami", "ecommerce", "voucherify"):
        leaves(templates(kind))
    return sorted(found)


EXTRA = [
    "a[0].b",
    "a[-1]",
    "a[1:3]",
    "a[?b > `1`].c",
    "!a",
    "a | b",
    "a && b",
    "a != `null`",
    "a == `0`",
    "a == `false`",
    "a < b",
    "a >= `2`",
    "*.a",
    "a.*",
    "[a, b][]",
    "{x: a, y: b}",
    "length(a)",
    "a[]",
    "a[].b[]",
    "not_null(a, b)",
    "`[1, 2]`",
    "@",
    'a.b.c || `"default"`',
    "a.length(@)",
    "a.b.to_string(@)",
    "a.not_null(@, `1`)",
    "a.[b, c]",
    "a.{x: b}",
]
EXPRESSIONS = builtin_expressions() + EXTRA

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-2, 2, allow_nan=False),
    st.decimals(-2, 2, places=2),  # the major-unit amounts of a transaction's view
    st.sampled_from(["", "x", "paid"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "data", "object", "id", "amount"]), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def interpreted(text: str, data: Any) -> tuple[str, Any]:
    try:
        return "ok", jmespath.search(text, data, options=mapping._OPTIONS)
    except jmespath.exceptions.JMESPathError as exc:
        return "error", type(exc).__name__
    except TypeError:  # the interpreter crashes ordering a number against a string: JMESPath
        return "crash", None  # says null (test_ordering_a_number_against_a_string_is_null)


def compiled(text: str, data: Any) -> tuple[str, Any]:
    try:
        return "ok", mapping.compile_expression(text).search(data)
    except mapping.MappingError:
        return "error", None


def test_the_built_in_tables_have_expressions() -> None:
    assert len(builtin_expressions()) > 40


@pytest.mark.parametrize("text", EXPRESSIONS)
@settings(max_examples=60, deadline=None)
@given(data=json_values)
def test_compiled_expressions_match_the_interpreter(text: str, data: Any) -> None:
    expected = interpreted(text, data)
    got = compiled(text, data)
    if expected[0] == "crash":
        assert got[0] == "ok", (text, data, got)
        return
    assert got[0] == expected[0], (text, data, expected, got)
    if expected[0] == "ok":
        assert got[1] == expected[1] and type(got[1]) is type(expected[1]), (
            text,
            data,
            expected,
            got,
        )


@given(data=json_values)
def test_truthiness_is_jmespaths(data: Any) -> None:
    assert mapping.truthy(data) == (jmespath.search('a || `"fallback"`', {"a": data}) == data)


def test_zero_is_true_in_jmespath() -> None:
    assert mapping.truthy(0)
    assert not mapping.truthy(False)
    assert not mapping.truthy({})


def test_a_transaction_id_longer_than_a_store_indexes_is_a_mapping_error() -> None:
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")
    payload["data"]["object"]["id"] = "in_" + "x" * mapping.MAX_REF
    with pytest.raises(mapping.MappingError, match=r"field id \(.*\): longer than 500"):
        transaction(stripe, payload)


def test_payment_references_longer_than_a_store_indexes_are_not_kept() -> None:
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")
    longest = "pi_" + "y" * (mapping.MAX_REF - 3)
    payload["data"]["object"]["payment_intent"] = longest
    payload["data"]["object"]["charge"] = longest + "z"
    refs = transaction(stripe, payload).refs
    assert longest in refs
    assert longest + "z" not in refs


def test_major_unit_amounts_are_ordered_as_numbers() -> None:
    """``txn.amount_major`` and its twins are Decimals; the interpreter orders them as numbers."""
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")  # 20.00 USD
    text = "txn.amount_major >= `10` && 'Big sale' || 'Sale'"
    assert transaction(stripe, payload, fields={"event_name": text}).event_name == "Big sale"
    for expression in ("@ > `1`", "@ <= `1.5`", "`2` >= @"):
        assert compiled(expression, Decimal("1.5")) == interpreted(expression, Decimal("1.5"))


def test_a_function_after_a_dot_sees_null_as_the_interpreter_does() -> None:
    assert compiled("a.not_null(@, `1`)", {}) == interpreted("a.not_null(@, `1`)", {}) == ("ok", 1)
    assert compiled("a.b.to_string(@)", {"a": {}}) == ("ok", "null")
    assert compiled("a.length(@)", {}) == ("error", None)


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        ("`5`", "expected an array of objects, got int"),
        ("`true`", "expected an array of objects, got bool"),
        ('`{"id": "x"}`', "expected an array of objects, got dict"),
        ('`[{"id": {"sku": "x"}}]`', "an item's id must be text, got dict"),
        ('`[{"id": "x", "name": ["Pro"]}]`', "an item's name must be text, got list"),
        ('`[{"id": "x", "name": 19.99}]`', "an item's name must be text, got float"),
    ],
)
def test_items_of_the_wrong_type_are_a_mapping_error(items: str, problem: str) -> None:
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")
    with pytest.raises(mapping.MappingError, match=rf"field items \(.*\): {re.escape(problem)}"):
        transaction(stripe, payload, fields={"items": items})


def test_an_item_quantity_that_is_a_boolean_is_not_sent() -> None:
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")
    items = '`[{"id": "x", "quantity": true}, {"id": "y", "quantity": 2}]`'
    txn = transaction(stripe, payload, fields={"items": items})
    assert [item.quantity for item in txn.items] == [None, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sub(`19.99`, `5`)", 14.99),
        ("sub(`0.3`, `0.1`)", 0.2),
        ("sum(`[1.1, 2.2]`)", 3.3),
        ("sum(`[0.1, 0.2, 3]`)", 3.3),
        ("minor(sub(`19.99`, `5`), 'USD')", 1499),
        ("minor(sum(`[1.1, 2.2]`), 'USD')", 330),
        ("sub(`2000`, `500`)", 1500),
        ("sum(`[9007199254740993, 1]`)", 9007199254740994),
    ],
)
def test_sub_and_sum_do_no_float_arithmetic(text: str, expected: float) -> None:
    result = mapping.compile_expression(text).search({})
    assert result == expected
    assert type(result) is type(expected)


def test_a_route_field_replaces_a_built_in_expression_that_fails() -> None:
    """A refund in two currencies is a dead delivery (same() fails); the route's own
    ``currency`` and ``amount`` are the fix, and must not fail on the built-in ones first."""
    from tests.sources.support import fixture, make, transaction

    shopify = make("shopify")
    payload = fixture("shopify", "refunds_create.json")
    payload["transactions"][2]["currency"] = "EUR"
    topic = {"X-Shopify-Topic": "refunds/create"}
    with pytest.raises(mapping.MappingError, match=r"field currency: .*same\(\)"):
        transaction(shopify, payload, topic)
    fields = {
        "currency": "event.transactions[1].currency",
        "amount": "minor(event.transactions[1].amount, event.transactions[1].currency)",
    }
    txn = transaction(shopify, payload, topic, fields=fields)
    assert (txn.amount, txn.currency) == (2200, "USD")


def test_a_refund_names_a_purchase_whose_id_is_a_number() -> None:
    """A sale's numeric id is kept as its text; a refund's numeric reference to it must be too,
    or the refund never finds its purchase."""
    from tests.sources.support import make

    source = make("hmac", ("hmac_x",), header="X-Signature")
    sale_rule = mapping.TransactionRule(
        "sale",
        {
            "id": mapping.compile_expression("event.order"),
            "amount": mapping.compile_expression("`1990`"),
            "currency": mapping.compile_expression("'EUR'"),
        },
    )
    refund_rule = mapping.TransactionRule(
        "refund",
        {
            "amount": mapping.compile_expression("`1990`"),
            "currency": mapping.compile_expression("'EUR'"),
            "refs": mapping.compile_expression("[event.order, `true`]"),
        },
    )
    payload = {"type": "payment", "order": 5521}
    sale = source.event({**payload, "id": "s"}, {})
    refund = source.event({**payload, "id": "r"}, {})
    sale_txn = mapping.build_transaction(sale_rule, sale, "custom", "iso")
    refund_txn = mapping.build_transaction(refund_rule, refund, "custom", "iso")
    assert sale_txn.id == "5521"
    assert refund_txn.refs == ["5521"]


def test_ordering_a_number_against_a_string_is_null() -> None:
    """JMESPath: an ordering comparison of anything but two numbers or two strings is null; in
    a filter, that element is left out (jmespath's interpreter raises TypeError on both)."""
    data = {"a": [{"b": "x", "c": 1}, {"b": 2, "c": 2}, {"b": "2", "c": 3}]}
    assert compiled("a[0].b > `1`", data) == ("ok", None)
    assert compiled("a[?b > `1`].c", data) == ("ok", [2])
    assert compiled("a[?b > '1'].c", data) == ("ok", [1, 3])
    assert compiled("a[?b > `1`] | length(@)", data) == ("ok", 1)
    assert compiled("*[?b > `1`].c", data) == ("ok", [[2]])


@pytest.mark.parametrize("field", ["amount", "discount", "tax", "shipping"])
def test_a_major_unit_amount_in_a_minor_unit_field_is_a_mapping_error(field: str) -> None:
    """txn.amount_major is 20.00 for 2000 cents: taken as minor units it would send 0.20."""
    from tests.sources.support import fixture, make, transaction

    stripe = make("stripe", ("whsec_x",))
    payload = fixture("stripe", "invoice.paid.json")
    with pytest.raises(mapping.MappingError, match=rf"field {field} \(.*\): 20.00 is in major"):
        transaction(stripe, payload, fields={field: "txn.amount_major"})
