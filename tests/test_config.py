"""bridge.config.load and bridge.tableyaml: `file:line: key: problem` lines, env, typing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge import tableyaml
from bridge.config import (
    Config,
    ConfigError,
    DubDestination,
    UmamiDestination,
    VoucherifyDestination,
    load,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "bridge.yaml"

ENV_NAMES = (
    "STRIPE_WEBHOOK_SECRET",
    "DUB_API_KEY",
    "SHOP_API_KEY",
    "SHOP_API_URL",
    "VOUCHERIFY_APP_ID",
    "VOUCHERIFY_APP_TOKEN",
    "UMAMI_URL",
    "UMAMI_WEBSITE_ID",
    "UMAMI_HOSTNAME",
    "BRIDGE_DATABASE_URL",
    "BRIDGE_TEST_UNSET",
    "BRIDGE_TEST_VALUE",
)

# A valid table; the tests below edit it and rely on these line numbers.
BASE = """\
sources:
  stripe:
    kind: stripe
    signing_secrets: [whsec_test_one]
destinations:
  dub:
    kind: dub
    api_key: dub_key_123
routes:
  - from: stripe/invoice.paid
    to: [dub]
"""


@pytest.fixture(autouse=True)
def empty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "bridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[tuple[int, str, str]]:
    """load() must fail; each problem line split into (line, key, problem)."""
    with pytest.raises(ConfigError) as info:
        load(path)
    error = info.value
    assert error.file == str(path)
    assert str(error) == "\n".join(error.lines())
    out: list[tuple[int, str, str]] = []
    for text in error.lines():
        prefix = f"{path}:"
        assert text.startswith(prefix), text
        line, key, message = text[len(prefix) :].split(": ", 2)
        out.append((int(line), key, message))
    return out


def only_problem(path: Path) -> tuple[int, str, str]:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


def assert_only(path: Path, line: int, key: str, text: str) -> None:
    got_line, got_key, message = only_problem(path)
    assert (got_line, got_key) == (line, key), message
    assert text in message


# --- the base table is valid ---------------------------------------------------------------


def test_base_table_loads(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE))
    assert isinstance(config, Config)
    assert list(config.sources) == ["stripe"]
    assert config.sources["stripe"].signing_secrets[0].get_secret_value() == "whsec_test_one"
    dub = config.destinations["dub"]
    assert isinstance(dub, DubDestination)
    assert dub.dry_run is False
    assert dub.base_url == "https://api.dub.co"
    assert [(r.source, r.event, r.to) for r in config.routes] == [
        ("stripe", "invoice.paid", ("dub",))
    ]


# --- problems: file:line: key: problem -----------------------------------------------------


def test_unknown_destination_kind(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("kind: dub", "kind: dubb"))
    assert_only(path, 7, "destinations.dub.kind", "unknown kind 'dubb'")
    assert "dub, umami, ecommerce, voucherify" in only_problem(path)[2]


def test_unknown_source_kind(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("kind: stripe", "kind: paypal"))
    assert_only(path, 3, "sources.stripe.kind", "unknown kind 'paypal'")


def test_route_to_unknown_destination(tmp_path: Path) -> None:
    text = BASE + "  - from: stripe/charge.refunded\n    to: [nowhere, dub]\n"
    assert_only(write(tmp_path, text), 13, "routes[1].to[0]", "no destination named 'nowhere'")


def test_route_to_unknown_destination_in_block_list(tmp_path: Path) -> None:
    text = BASE + (
        "  - from: stripe/charge.refunded\n    to:\n      - dub\n      - nowhere\n"  # line 15
    )
    assert_only(write(tmp_path, text), 15, "routes[1].to[1]", "no destination named 'nowhere'")


def test_route_to_a_single_unknown_name(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("to: [dub]", "to: nowhere"))
    assert_only(path, 11, "routes[0].to[0]", "no destination named 'nowhere'")


def test_route_from_unknown_source(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("from: stripe/", "from: paypal/"))
    assert_only(path, 10, "routes[0].from", "no source named 'paypal'")


def test_route_from_without_slash(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("from: stripe/invoice.paid", "from: stripe"))
    assert_only(path, 10, "routes[0].from", "expected SOURCE/EVENT_TYPE")


def test_route_from_with_empty_event(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("from: stripe/invoice.paid", "from: stripe/"))
    assert_only(path, 10, "routes[0].from", "expected SOURCE/EVENT_TYPE")


def test_route_event_without_builtin_rule_needs_kind(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("invoice.paid", "customer.created"))
    assert_only(path, 10, "routes[0].from", "'customer.created' has no built-in transaction")


def test_route_kind_contradicting_builtin_rule(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "    kind: refund\n")
    assert_only(path, 12, "routes[0].kind", "is a sale")


def test_missing_required_key(tmp_path: Path) -> None:
    text = BASE.replace(
        "routes:\n",
        "  umami:\n"  # line 9
        "    kind: umami\n"
        "    hostname: example.com\n"
        "    dry_run: true\n"
        "routes:\n",
    )
    assert_only(write(tmp_path, text), 9, "destinations.umami.website_id", "required key")


def test_missing_top_level_section(tmp_path: Path) -> None:
    text = BASE[: BASE.index("routes:")]
    assert_only(write(tmp_path, text), 1, "routes", "required key")


def test_unknown_key_in_destination(tmp_path: Path) -> None:
    path = write(
        tmp_path, BASE.replace("    api_key: dub_key_123\n", "    api_key: k\n    colour: red\n")
    )
    assert_only(path, 9, "destinations.dub.colour", "unknown key")


def test_unknown_key_in_route(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "    whenever: always\n")
    assert_only(path, 12, "routes[0].whenever", "unknown key")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert_only(write(tmp_path, BASE + "extras: 1\n"), 12, "extras", "unknown key")


def test_invalid_jmespath_in_when(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "    when: 'data.object.[['\n")
    assert_only(path, 12, "routes[0].when", "invalid JMESPath 'data.object.[['")


def test_invalid_jmespath_in_fields(tmp_path: Path) -> None:
    text = BASE + (
        "    fields:\n"
        "      customer_id: data.object.customer\n"
        "      customer_email: 'event.[['\n"  # line 14
    )
    assert_only(write(tmp_path, text), 14, "routes[0].fields.customer_email", "invalid JMESPath")


def test_unknown_field_name_in_fields(tmp_path: Path) -> None:
    text = BASE + "    fields:\n      customer_mail: event.data.object.email\n"
    path = write(tmp_path, text)
    assert_only(path, 13, "routes[0].fields.customer_mail", "unknown field")
    assert "customer_email" in only_problem(path)[2]


def test_unset_variable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("[whsec_test_one]", '["${BRIDGE_TEST_UNSET}"]'))
    found = problems(path)
    assert found[0][:2] == (4, "sources.stripe.signing_secrets[0]")
    assert "environment variable BRIDGE_TEST_UNSET is not set" in found[0][2]
    # The empty secret it leaves is refused as well, on the same line.
    assert [(line, key) for line, key, _ in found[1:]] == [(4, "sources.stripe.signing_secrets")]


@pytest.mark.parametrize(
    "reference", ["${BRIDGE_TEST_VALUE", "${BRIDGE_TEST_VALUE:default}", "${BRIDGE-TEST}", "${}"]
)
def test_a_malformed_variable_reference_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str
) -> None:
    # taken as written, it would be the API key itself
    monkeypatch.setenv("BRIDGE_TEST_VALUE", "from-the-environment")
    path = write(tmp_path, BASE.replace("dub_key_123", f'"{reference}"'))
    assert_only(path, 8, "destinations.dub.api_key", "a ${ that is not ${VAR}")


def test_unset_variable_for_api_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("dub_key_123", '"${BRIDGE_TEST_UNSET}"'))
    found = problems(path)
    assert [(line, key) for line, key, _ in found] == [
        (6, "destinations.dub"),
        (8, "destinations.dub.api_key"),
    ]
    assert "api_key required unless dry_run is true" in found[0][2]
    assert "environment variable BRIDGE_TEST_UNSET is not set" in found[1][2]


def test_missing_api_key_when_not_dry_run(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("    api_key: dub_key_123\n", ""))
    assert_only(path, 6, "destinations.dub", "api_key required unless dry_run is true")


def test_missing_api_key_with_explicit_dry_run_false(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("api_key: dub_key_123", "dry_run: false"))
    assert_only(path, 6, "destinations.dub", "api_key required")


def test_missing_app_token_for_voucherify(tmp_path: Path) -> None:
    text = BASE.replace(
        "routes:\n",
        "  voucherify:\n"  # line 9
        "    kind: voucherify\n"
        "    app_id: my_app_id\n"
        "routes:\n",
    )
    assert_only(write(tmp_path, text), 9, "destinations.voucherify", "app_token required")


@pytest.mark.parametrize("url", ["http://[::1", "https://dub.example:abc", "http://h:99999"])
def test_base_url_with_a_host_or_port_no_request_can_have(tmp_path: Path, url: str) -> None:
    # accepted, it broke each delivery (and explain) when the request's URL was made
    path = write(tmp_path, BASE.replace("    api_key:", f"    base_url: '{url}'\n    api_key:"))
    assert_only(path, 6, "destinations.dub", "base_url must be an http(s) URL")


def test_missing_api_key_is_fine_in_dry_run(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE.replace("api_key: dub_key_123", "dry_run: true")))
    dub = config.destinations["dub"]
    assert isinstance(dub, DubDestination)
    assert dub.api_key is None
    assert dub.dry_run is True


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("true", True), ("false", False)])
def test_http2_is_off_unless_asked_for(tmp_path: Path, value: str | None, expected: bool) -> None:
    line = "" if value is None else f"    http2: {value}\n"
    config = load(
        write(
            tmp_path,
            BASE.replace("    api_key: dub_key_123\n", f"    api_key: dub_key_123\n{line}"),
        )
    )
    assert config.destinations["dub"].http2 is expected


def test_http2_must_be_true_or_false(tmp_path: Path) -> None:
    text = BASE.replace(
        "    api_key: dub_key_123\n", "    api_key: dub_key_123\n    http2: maybe\n"
    )
    line, key, problem = only_problem(write(tmp_path, text))
    assert (line, key) == (9, "destinations.dub.http2")
    assert "bool" in problem


def test_bad_duration(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "delivery:\n  lease: 5 minutes\n")
    assert_only(path, 13, "delivery.lease", "not a duration: '5 minutes'")


@pytest.mark.parametrize("timeout", ["0", "0s", "0ms"])
def test_a_destination_timeout_of_nothing_is_refused(tmp_path: Path, timeout: str) -> None:
    # every attempt would time out before a byte was sent, retried until it went dead
    text = BASE.replace(
        "    api_key: dub_key_123\n", f"    api_key: dub_key_123\n    timeout: {timeout}\n"
    )
    assert_only(write(tmp_path, text), 9, "destinations.dub.timeout", "greater than 0")


def test_bad_duration_in_destination_retry(tmp_path: Path) -> None:
    text = BASE.replace(
        "    api_key: dub_key_123\n",
        "    api_key: dub_key_123\n    retry:\n      max_age: 3w\n",  # line 10
    )
    assert_only(write(tmp_path, text), 10, "destinations.dub.retry.max_age", "not a duration")


def test_negative_duration(tmp_path: Path) -> None:
    path = write(
        tmp_path, BASE.replace("    signing_secrets", "    tolerance: -5\n    signing_secrets")
    )
    assert_only(path, 4, "sources.stripe.tolerance", "not a duration")


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("api_key: dub_key_123", "api_key: a: b"))
    assert_only(path, 8, "(yaml)", "not valid YAML")


def test_invalid_yaml_unclosed_quote(tmp_path: Path) -> None:
    text = "sources:\n  stripe:\n    kind: 'stripe\n    signing_secrets: [x]\n"
    path = write(tmp_path, text)
    line, key, message = only_problem(path)
    assert key == "(yaml)"
    assert "not valid YAML" in message
    assert line >= 3


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(
        tmp_path, BASE.replace("    api_key: dub_key_123\n", "    api_key: a\n    api_key: b\n")
    )
    assert_only(path, 9, "(yaml)", "duplicate key 'api_key'")


def test_duplicate_destination_name(tmp_path: Path) -> None:
    text = BASE.replace("routes:\n", "  dub:\n    kind: dub\n    api_key: other\nroutes:\n")
    assert_only(write(tmp_path, text), 9, "(yaml)", "duplicate key 'dub'")


def test_table_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert_only(write(tmp_path, "- sources\n- routes\n"), 1, "(table)", "must be a mapping")


def test_unreadable_file(tmp_path: Path) -> None:
    assert_only(tmp_path / "missing.yaml", 1, "(file)", "cannot read the table")


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = BASE.replace("kind: dub", "kind: dubb").replace("from: stripe/", "from: paypal/")
    text += "  - from: stripe/charge.refunded\n    to: [nowhere]\n"
    found = problems(write(tmp_path, text))
    assert [(line, key) for line, key, _ in found] == [
        (7, "destinations.dub.kind"),
        (10, "routes[0].from"),
        (13, "routes[1].to[0]"),
    ]


# --- the example and the environment -------------------------------------------------------


def test_example_loads_with_an_empty_environment() -> None:
    config = load(EXAMPLE)
    stripe = config.sources["stripe"]
    assert [s.get_secret_value() for s in stripe.signing_secrets] == [
        "whsec_example_test_secret_do_not_use"
    ]
    assert stripe.tolerance == 300.0
    assert set(config.destinations) == {"dub", "umami", "shop", "voucherify"}
    assert all(d.dry_run is True for d in config.destinations.values())
    umami = config.destinations["umami"]
    assert isinstance(umami, UmamiDestination)
    assert umami.base_url == "https://cloud.umami.is"
    assert umami.website_id == "00000000-0000-4000-8000-000000000000"
    assert umami.hostname == "example.com"
    assert config.destinations["shop"].base_url == "https://api.tolinku.com"
    assert config.destinations["dub"].secrets() == []
    assert [(r.source, r.event) for r in config.routes] == [
        ("stripe", "invoice.paid"),
        ("stripe", "checkout.session.completed"),
        ("stripe", "checkout.session.async_payment_succeeded"),
        ("stripe", "refund.created"),
        ("stripe", "refund.updated"),
    ]
    assert config.database_url == "sqlite:///" + str((EXAMPLE.parent / "bridge.db").resolve())
    assert config.secrets() == ("whsec_example_test_secret_do_not_use",)


def test_example_takes_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_from_env")
    monkeypatch.setenv("UMAMI_HOSTNAME", "shop.example.org")
    monkeypatch.setenv("DUB_API_KEY", "dub_from_env")
    config = load(EXAMPLE)
    assert config.sources["stripe"].signing_secrets[0].get_secret_value() == "whsec_from_env"
    umami = config.destinations["umami"]
    assert isinstance(umami, UmamiDestination)
    assert umami.hostname == "shop.example.org"
    assert config.destinations["dub"].secrets() == ["dub_from_env"]


def test_default_used_when_variable_unset(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("dub_key_123", '"${BRIDGE_TEST_VALUE:-fallback_key}"'))
    assert load(path).destinations["dub"].secrets() == ["fallback_key"]


def test_default_used_when_variable_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_VALUE", "")
    path = write(tmp_path, BASE.replace("dub_key_123", '"${BRIDGE_TEST_VALUE:-fallback_key}"'))
    assert load(path).destinations["dub"].secrets() == ["fallback_key"]


def test_environment_wins_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_VALUE", "env_key")
    path = write(tmp_path, BASE.replace("dub_key_123", '"${BRIDGE_TEST_VALUE:-fallback_key}"'))
    assert load(path).destinations["dub"].secrets() == ["env_key"]


def test_plain_variable_takes_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_VALUE", "env_key")
    path = write(tmp_path, BASE.replace("dub_key_123", '"prefix-${BRIDGE_TEST_VALUE}-suffix"'))
    assert load(path).destinations["dub"].secrets() == ["prefix-env_key-suffix"]


def test_a_problem_never_quotes_what_the_environment_gave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a secret in the wrong key (an API key where a URL or a duration goes, two variables
    # swapped) was quoted in the problem, printed at every start of a container that restarts
    monkeypatch.setenv("BRIDGE_TEST_VALUE", "sk_live_never_printed")
    table = BASE.replace("dub_key_123", "dub_key_123\n    base_url: ${BRIDGE_TEST_VALUE}")
    table = table.replace(
        "[whsec_test_one]", "[whsec_test_one]\n    tolerance: ${BRIDGE_TEST_VALUE}"
    )
    found = problems(write(tmp_path, table))
    assert [(line, key) for line, key, _ in found] == [
        (5, "sources.stripe.tolerance"),
        (7, "destinations.dub"),
    ]
    assert all("'***'" in problem and "never_printed" not in problem for *_, problem in found)


# --- values are text, typed by the models --------------------------------------------------

YAML11 = """\
sources:
  stripe: {kind: stripe, signing_secrets: whsec_one}
destinations:
  yes: {kind: umami, website_id: 0123, hostname: on, dry_run: true}
  no: {kind: dub, dry_run: true}
routes:
  - from: stripe/invoice.paid
    to: [yes, no]
"""


def test_yaml11_booleans_and_octals_stay_text(tmp_path: Path) -> None:
    config = load(write(tmp_path, YAML11))
    assert list(config.destinations) == ["yes", "no"]
    umami = config.destinations["yes"]
    assert isinstance(umami, UmamiDestination)
    assert umami.hostname == "on"
    assert umami.website_id == "0123"
    assert config.routes[0].to == ("yes", "no")
    assert umami.dry_run is True
    assert config.destinations["no"].dry_run is True


def test_tableyaml_reads_every_scalar_as_text() -> None:
    table = tableyaml.load_table("a: on\nyes: no\nb: 0123\nc: 1.50\nd: ~\ne:\nf: 'null'\n")
    assert table.data == {
        "a": "on",
        "yes": "no",
        "b": "0123",
        "c": "1.50",
        "d": None,
        "e": None,
        "f": "null",
    }
    assert table.line_of(("b",)) == 3
    assert table.line_of(("b", "deeper", 0)) == 3
    assert table.line_of(("nothing",)) == 1


def test_tableyaml_duplicate_key_line() -> None:
    with pytest.raises(tableyaml.TableSyntaxError) as info:
        tableyaml.load_table("a:\n  b: 1\n  c: 2\n  b: 3\n")
    assert info.value.line == 4
    assert "duplicate key 'b'" in info.value.message


def test_tableyaml_empty_text_is_an_empty_mapping() -> None:
    assert tableyaml.load_table("").data == {}
    assert tableyaml.load_table("# only a comment\n").data == {}


def test_tableyaml_aliases_expand_but_not_without_end() -> None:
    assert tableyaml.load_table("a: &all [x, y]\nb: *all\n").data == {
        "a": ["x", "y"],
        "b": ["x", "y"],
    }
    # ten aliases of ten aliases of ... : 10**7 values from seven lines
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n" for n in range(1, 7)
    )
    with pytest.raises(tableyaml.TableSyntaxError) as info:
        tableyaml.load_table(text)
    assert "more than 100000 values" in info.value.message


@pytest.mark.parametrize(
    "text",
    ["sources: &s\n  x: *s\n", "a: " + "[" * 5000 + "]" * 5000 + "\n"],
    ids=["alias within itself", "deep"],
)
def test_tableyaml_nesting_without_end_is_a_syntax_error(tmp_path: Path, text: str) -> None:
    line, key, message = only_problem(write(tmp_path, text))
    assert (line, key) == (1, "(yaml)")
    assert "nested too deeply" in message


def test_dry_run_true_is_a_bool(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE.replace("api_key: dub_key_123", "dry_run: true")))
    assert config.destinations["dub"].dry_run is True


def test_dry_run_nonsense_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("api_key: dub_key_123", "dry_run: maybe"))
    assert_only(path, 8, "destinations.dub.dry_run", "boolean")


def test_retry_in_seconds(tmp_path: Path) -> None:
    text = BASE.replace(
        "    api_key: dub_key_123\n",
        "    api_key: k\n    retry: {initial: 0.2, max_interval: 1, max_attempts: 6}\n",
    )
    retry = load(write(tmp_path, text)).destinations["dub"].retry
    assert retry.initial == 0.2
    assert retry.max_interval == 1.0
    assert retry.max_attempts == 6
    assert retry.max_age == 3 * 86400.0  # the default


def test_retry_in_duration_strings(tmp_path: Path) -> None:
    text = BASE.replace(
        "    api_key: dub_key_123\n", "    api_key: k\n    retry: {initial: 500ms, max_age: 3d}\n"
    )
    retry = load(write(tmp_path, text)).destinations["dub"].retry
    assert retry.initial == 0.5
    assert retry.max_age == 259200.0
    assert retry.max_attempts == 25  # the default


def test_retry_max_attempts_at_least_one(tmp_path: Path) -> None:
    text = BASE.replace(
        "    api_key: dub_key_123\n", "    api_key: k\n    retry: {max_attempts: 0}\n"
    )
    assert_only(write(tmp_path, text), 9, "destinations.dub.retry.max_attempts", "1")


# --- storage -------------------------------------------------------------------------------


def test_default_sqlite_path_is_next_to_the_table(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE))
    assert config.database_url == "sqlite:///" + str((tmp_path / "bridge.db").resolve())


def test_relative_sqlite_path_resolves_next_to_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write(folder, BASE + "storage:\n  url: sqlite:///data/events.db\n")
    config = load(path)
    assert config.storage.url == "sqlite:///data/events.db"
    assert config.database_url == "sqlite:///" + str((folder / "data" / "events.db").resolve())


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    target = (tmp_path / "abs" / "events.db").resolve()
    path = write(tmp_path, BASE + f"storage:\n  url: sqlite:///{target}\n")
    assert load(path).database_url == f"sqlite:///{target}"


def test_sqlite_memory_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "storage:\n  url: 'sqlite:///:memory:'\n")
    assert load(path).database_url == "sqlite:///:memory:"


@pytest.mark.parametrize("where", ["table", "environment"])
def test_a_sqlite_url_with_no_path_is_a_problem_not_a_database_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # sqlite:/// with nothing after it (say sqlite:///${DATA_DIR:-}) was an in-memory database:
    # `check` said OK, and `serve` acknowledged webhooks that a restart then lost
    if where == "environment":
        monkeypatch.setenv("BRIDGE_DATABASE_URL", "sqlite:///")
        path = write(tmp_path, BASE)
    else:
        path = write(tmp_path, BASE + "storage:\n  url: 'sqlite:///'\n")
    with pytest.raises(ConfigError) as refused:
        load(path)
    prefix = "BRIDGE_DATABASE_URL: " if where == "environment" else ""
    assert f"storage.url: {prefix}sqlite:/// names no file" in str(refused.value)


def test_bridge_database_url_overrides_storage_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = (tmp_path / "override" / "other.db").resolve()
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{target}")
    config = load(write(tmp_path, BASE + "storage:\n  url: sqlite:///data/events.db\n"))
    assert config.database_url == f"sqlite:///{target}"


@pytest.mark.parametrize("where", ["table", "environment"])
def test_a_postgresql_url_that_is_not_a_url_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    url = "postgresql://bridge:pg_password_1@[::1/bridge"
    if where == "environment":
        monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
        path = write(tmp_path, BASE)
        line, key, message = only_problem(path)
        assert (line, key) == (1, "storage.url")
        assert message.startswith("BRIDGE_DATABASE_URL: not a valid URL")
    else:
        path = write(tmp_path, BASE + f"storage:\n  url: '{url}'\n")
        assert_only(path, 13, "storage.url", "not a valid URL")
    assert "pg_password_1" not in "\n".join(m for _, _, m in problems(path))


# --- secrets -------------------------------------------------------------------------------

SECRETS_TABLE = """\
sources:
  stripe:
    kind: stripe
    signing_secrets: ["${STRIPE_WEBHOOK_SECRET}", whsec_old_rotated_secret]
destinations:
  dub: {kind: dub, api_key: "${DUB_API_KEY}"}
  shop: {kind: ecommerce, api_key: shop_key_literal_777}
  voucherify:
    kind: voucherify
    app_id: "${VOUCHERIFY_APP_ID}"
    app_token: "${VOUCHERIFY_APP_TOKEN}"
  umami: {kind: umami, website_id: site-0001, hostname: example.com}
routes:
  - from: stripe/invoice.paid
    to: [dub, shop, voucherify, umami]
admin:
  token: admin_token_secret_555
"""


def test_secrets_lists_every_secret_and_repr_hides_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_current_secret_abc")
    monkeypatch.setenv("DUB_API_KEY", "dub_api_key_secret_xyz")
    monkeypatch.setenv("VOUCHERIFY_APP_ID", "voucherify_app_id_qqq")
    monkeypatch.setenv("VOUCHERIFY_APP_TOKEN", "voucherify_app_token_www")
    config = load(write(tmp_path, SECRETS_TABLE))
    expected = {
        "whsec_current_secret_abc",
        "whsec_old_rotated_secret",
        "dub_api_key_secret_xyz",
        "shop_key_literal_777",
        "voucherify_app_id_qqq",
        "voucherify_app_token_www",
        "admin_token_secret_555",
    }
    secrets = config.secrets()
    assert set(secrets) == expected
    assert len(secrets) == len(expected)
    voucherify = config.destinations["voucherify"]
    assert isinstance(voucherify, VoucherifyDestination)
    assert voucherify.app_token is not None
    assert voucherify.app_token.get_secret_value() == "voucherify_app_token_www"
    for text in (repr(config), str(config)):
        leaked = [secret for secret in expected if secret in text]
        assert leaked == []
    assert "site-0001" in repr(config)  # not a secret; shows the repr has the settings


@pytest.mark.parametrize(
    ("route", "line", "key", "missing"),
    [
        ("    kind: sale\n", 12, "routes[0].kind", "amount and currency required"),
        (
            "    kind: sale\n    fields:\n      amount: event.data.object.amount\n",
            13,
            "routes[0].fields",
            "currency required",
        ),
    ],
)
def test_a_route_of_its_own_kind_needs_an_amount_and_a_currency(
    tmp_path: Path, route: str, line: int, key: str, missing: str
) -> None:
    """With no built-in transaction, a route without them could only make dead deliveries."""
    path = write(tmp_path, BASE.replace("invoice.paid", "customer.created") + route)
    assert_only(path, line, key, missing)
    wildcard = BASE.replace("invoice.paid", "payment_intent.*") + route
    assert_only(write(tmp_path, wildcard), line, key, missing)


def test_a_route_of_its_own_kind_with_an_amount_and_a_currency_loads(tmp_path: Path) -> None:
    own = (
        "    kind: sale\n"
        "    fields:\n"
        "      amount: event.data.object.amount\n"
        "      currency: event.data.object.currency\n"
    )
    load(write(tmp_path, BASE.replace("invoice.paid", "payment_intent.succeeded") + own))
