"""The mapping table: YAML with line numbers, ``${ENV}`` secrets, pydantic models.

``load(path)`` returns a validated ``Config`` or raises ``ConfigError`` whose
``problems`` each read ``file:line: key: problem``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import importlib.util
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge import mapping, tableyaml
from bridge.durations import Duration
from bridge.logging import mask

DEFAULT_DATABASE = "sqlite:///bridge.db"
LEASE_MARGIN = 2.0  # the worker bounds a whole exchange at timeout + 1 s
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Problem:
    line: int
    key: str
    message: str


class ConfigError(Exception):
    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.file}:{p.line}: {p.key}: {p.message}" for p in self.problems]


def _none_if_blank(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_none_if_blank)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sources -------------------------------------------------------------------------------


class SourceConfig(_Model):
    kind: str
    signing_secrets: list[SecretStr] = Field(min_length=1)
    tolerance: Duration = 300.0

    @field_validator("signing_secrets", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("signing_secrets")
    @classmethod
    def _non_empty(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not secret.get_secret_value() for secret in value):
            raise ValueError("a signing secret is empty (is its environment variable set?)")
        return value


class StripeSource(SourceConfig):
    kind: Literal["stripe"]


class PaddleSource(SourceConfig):
    kind: Literal["paddle"]
    tolerance: Duration = 5.0  # what Paddle's SDKs allow


class PolarSource(SourceConfig):
    kind: Literal["polar"]


class StandardWebhooksSource(SourceConfig):
    kind: Literal["standard_webhooks"]

    @field_validator("signing_secrets")
    @classmethod
    def _base64(cls, value: list[SecretStr]) -> list[SecretStr]:
        for secret in value:
            text = secret.get_secret_value().removeprefix("whsec_").rstrip("=")
            try:
                key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ValueError("a Standard Webhooks secret is whsec_ followed by base64")
        return value


class _NoTimestampSource(SourceConfig):
    """A processor whose signature carries no time: a tolerance would mean nothing."""

    @model_validator(mode="after")
    def _no_tolerance(self) -> _NoTimestampSource:
        if "tolerance" in self.model_fields_set:
            raise ValueError(f"tolerance: {self.kind} signatures carry no timestamp")
        return self


class LemonSqueezySource(_NoTimestampSource):
    kind: Literal["lemonsqueezy"]


class ShopifySource(_NoTimestampSource):
    kind: Literal["shopify"]


class RevenueCatSource(_NoTimestampSource):
    # signing_secrets: the Authorization header values RevenueCat is set to send
    kind: Literal["revenuecat"]


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


class HmacSource(SourceConfig):
    kind: Literal["hmac"]
    header: str
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", max_length=100)  # before the digest, e.g. "sha256="
    timestamp_header: str | None = None  # then the signed bytes are "{timestamp}.{body}"

    @field_validator("header", "timestamp_header")
    @classmethod
    def _header_name(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_NAME.match(value):
            raise ValueError(f"not an HTTP header name: {value[:40]!r}")
        return value

    @model_validator(mode="after")
    def _tolerance_needs_timestamp(self) -> HmacSource:
        if "tolerance" in self.model_fields_set and self.timestamp_header is None:
            raise ValueError("tolerance: set timestamp_header too (without it nothing is timed)")
        return self


SOURCE_MODELS: dict[str, type[SourceConfig]] = {
    "stripe": StripeSource,
    "paddle": PaddleSource,
    "polar": PolarSource,
    "lemonsqueezy": LemonSqueezySource,
    "shopify": ShopifySource,
    "revenuecat": RevenueCatSource,
    "standard_webhooks": StandardWebhooksSource,
    "hmac": HmacSource,
}


# --- destinations --------------------------------------------------------------------------


class RetryConfig(_Model):
    max_attempts: int = Field(default=25, ge=1)
    initial: Duration = 5.0
    max_interval: Duration = 6 * 3600.0
    max_age: Duration = 3 * 86400.0


class DestinationConfig(_Model):
    kind: str
    base_url: str = ""
    dry_run: bool = False
    timeout: Duration = Field(default=10.0, gt=0)
    retry: RetryConfig = RetryConfig()
    rate_limit: int | None = Field(default=None, ge=1)  # requests per minute
    concurrency: int = Field(default=8, ge=1)
    # false: HTTP/1.1 keep-alive through the bridge's own lean transport (bridge/transport.py);
    # true: httpx's own transport, which offers h2 and http/1.1 by ALPN and speaks HTTP/2 where
    # the destination offers it, at several times the CPU a delivery (`python -m bench.transports`)
    http2: bool = False

    DEFAULT_BASE_URL: ClassVar[str] = ""
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()
    DEFAULT_RATE_LIMIT: ClassVar[int | None] = None

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> DestinationConfig:
        if not self.base_url:
            object.__setattr__(self, "base_url", self.DEFAULT_BASE_URL)
        try:
            port = urllib.parse.urlsplit(self.base_url).port  # raises if it is not a port
        except ValueError:
            port = -1
        valid = port != -1 and re.match(r"^https?://[^/\s]+", self.base_url) is not None
        if not valid:
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url[:60]!r}")
        if self.rate_limit is None and self.DEFAULT_RATE_LIMIT is not None:
            object.__setattr__(self, "rate_limit", self.DEFAULT_RATE_LIMIT)
        if not self.dry_run:
            missing = [name for name in self.SECRET_FIELDS if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"{', '.join(missing)} required unless dry_run is true "
                    "(is its environment variable set?)"
                )
        return self

    def secrets(self) -> list[str]:
        values = (getattr(self, name) for name in self.SECRET_FIELDS)
        return [value.get_secret_value() for value in values if value is not None]

    def settings(self) -> dict[str, Any]:
        """What body templates see as ``destination``: the settings, secrets left out."""
        data = self.model_dump(exclude=set(self.SECRET_FIELDS) | {"retry"})
        return data


DUB_PLAN_LIMITS = {"free": 60, "pro": 600, "business": 1200, "advanced": 3000, "enterprise": 3000}


class DubDestination(DestinationConfig):
    kind: Literal["dub"]
    api_key: OptionalSecret = None
    # /track/sale needs Business or higher; the plan sets the default requests per minute
    plan: Literal["free", "pro", "business", "advanced", "enterprise"] = "business"
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.dub.co"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)

    @model_validator(mode="after")
    def _plan_limit(self) -> DubDestination:
        if self.rate_limit is None:
            object.__setattr__(self, "rate_limit", DUB_PLAN_LIMITS[self.plan])
        return self


class UmamiDestination(DestinationConfig):
    kind: Literal["umami"]
    website_id: str
    hostname: str = Field(min_length=1, max_length=100)
    event_name: str = Field(default="revenue", min_length=1, max_length=50)
    user_agent: str = BROWSER_USER_AGENT
    DEFAULT_BASE_URL: ClassVar[str] = "https://cloud.umami.is"


class EcommerceDestination(DestinationConfig):
    kind: Literal["ecommerce"]
    api_key: OptionalSecret = None
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.tolinku.com"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)
    DEFAULT_RATE_LIMIT: ClassVar[int | None] = 1000


class VoucherifyDestination(DestinationConfig):
    kind: Literal["voucherify"]
    app_id: OptionalSecret = None
    app_token: OptionalSecret = None
    sale_event: str = Field(default="payment_succeeded", min_length=1, max_length=300)
    refund_event: str = Field(default="payment_refunded", min_length=1, max_length=300)
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.voucherify.io"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("app_id", "app_token")
    DEFAULT_RATE_LIMIT: ClassVar[int | None] = 100


DESTINATION_MODELS: dict[str, type[DestinationConfig]] = {
    "dub": DubDestination,
    "umami": UmamiDestination,
    "ecommerce": EcommerceDestination,
    "voucherify": VoucherifyDestination,
}


# --- routes, storage, delivery -------------------------------------------------------------


class RouteModel(_Model):
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    when: str | None = None
    kind: Literal["sale", "refund"] | None = None
    fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("from_")
    @classmethod
    def _source_slash_event(cls, value: str) -> str:
        source, _, event = value.partition("/")
        if not source or not event:
            raise ValueError(f"expected SOURCE/EVENT_TYPE, got {value!r}")
        return value


class StorageConfig(_Model):
    url: str = DEFAULT_DATABASE
    # apply pending schema migrations at start-up (else: `bridge migrate` first)
    migrate: bool = True
    # SQLite: FULL (the default) makes an acknowledged event survive power loss or an OS crash;
    # NORMAL only a crash of the process (faster commits, an explicit opt-in)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"


class DeliveryConfig(_Model):
    lease: Duration = Field(default=30.0, gt=0)
    poll_interval: Duration = Field(default=1.0, gt=0)
    batch: int = Field(default=64, ge=1)
    shutdown_grace: Duration = 10.0


class ServerConfig(_Model):
    max_body: int = Field(default=1024 * 1024, ge=1024)
    max_depth: int = Field(default=64, ge=4)


class AdminConfig(_Model):
    # the admin API is off unless a token is set here or in BRIDGE_ADMIN_TOKEN
    token: OptionalSecret = None


class RetentionConfig(_Model):
    # events whose deliveries all finished well are pruned after this; the event row is the
    # dedupe key, and processors retry for days (Stripe: 3), so at least 7 days
    events: Duration = Field(default=30 * 86400.0, ge=7 * 86400.0)
    # what a refund needs to find its purchase
    purchases: Duration = Field(default=400 * 86400.0, ge=7 * 86400.0)
    interval: Duration = Field(default=3600.0, gt=0)


class TableModel(_Model):
    sources: dict[str, Any] = Field(min_length=1)
    destinations: dict[str, Any] = Field(min_length=1)
    routes: list[RouteModel] = Field(min_length=1)
    storage: StorageConfig = StorageConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    retention: RetentionConfig = RetentionConfig()


# --- the validated table -------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    index: int
    source: str
    event: str  # a type, or an fnmatch pattern with *
    to: tuple[str, ...]
    when: mapping.Expression | None
    kind: str | None
    fields: Mapping[str, mapping.Expression]

    @property
    def name(self) -> str:
        return f"routes[{self.index}] {self.source}/{self.event}"

    def matches(self, source: str, event_type: str) -> bool:
        return self.source == source and fnmatch.fnmatchcase(event_type, self.event)


@dataclass(frozen=True)
class Config:
    file: str
    sources: Mapping[str, SourceConfig]
    destinations: Mapping[str, DestinationConfig]
    routes: tuple[Route, ...]
    storage: StorageConfig
    delivery: DeliveryConfig
    server: ServerConfig
    admin: AdminConfig
    retention: RetentionConfig
    database_url: str = DEFAULT_DATABASE
    _secrets: tuple[str, ...] = field(default=(), repr=False)

    def secrets(self) -> tuple[str, ...]:
        """Every secret value the table holds (to mask them wherever text leaves the bridge)."""
        return self._secrets


def _interpolate(
    value: Any, path: tableyaml.Path, errors: list[tuple[tableyaml.Path, str]], read: list[str]
) -> Any:
    """``value`` with each ``${VAR}`` replaced; ``read`` gets what the environment gave, of 8
    characters or more (a short one, a number or ``true``, masked would hide that text wherever
    a message has it)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), errors, read) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), errors, read) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        current = os.environ.get(name)
        if current:
            if len(current) >= 8:
                read.append(current)
            return current
        if default is not None:
            return default
        if current is None:
            errors.append((path, f"environment variable {name} is not set"))
        return ""

    if "${" in _ENV.sub("", value):
        # a typo such as ${VAR (no brace) or ${VAR:default} would be taken as written
        errors.append((path, "a ${ that is not ${VAR} or ${VAR:-default}"))
    return _ENV.sub(replace, value)


def _key(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(table)"


def _pydantic_errors(
    exc: ValidationError, prefix: tableyaml.Path
) -> Iterator[tuple[tableyaml.Path, str]]:
    for error in exc.errors():
        loc = tuple("from" if part == "from_" else part for part in error["loc"])
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        yield (*prefix, *loc), message


def resolve_database_url(url: str, config_file: Path) -> str:
    """``sqlite:///relative.db`` is relative to the table's folder."""
    env = os.environ.get("BRIDGE_DATABASE_URL")
    if env:
        url = env
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        relative = url[len("sqlite:///") :]
        if relative and relative != ":memory:" and not os.path.isabs(relative):
            return "sqlite:///" + str((config_file.parent / relative).resolve())
    return url


def _storage_problem(url: str) -> str | None:
    """What ``serve`` would fail on at start-up, said by ``check`` (no connection is made)."""
    where = "BRIDGE_DATABASE_URL: " if os.environ.get("BRIDGE_DATABASE_URL") else ""
    if url == "sqlite:///":  # the sqlite module's empty name: a database in memory
        return (
            f"{where}sqlite:/// names no file: a database in memory would lose every "
            "acknowledged event at a restart (sqlite:///path/to/bridge.db, or "
            "sqlite:///:memory: if that is what you want)"
        )
    if url.startswith("sqlite:///"):
        return None  # the store makes the file's folder if it has to
    if url.startswith(("postgresql://", "postgres://")):
        if importlib.util.find_spec("psycopg") is None:
            return (
                f"{where}PostgreSQL, but psycopg is not installed: "
                "pip install 'payment-webhook-bridge[postgres]'"
            )
        try:
            urllib.parse.urlsplit(url)  # the secrets' reading of it, below
        except ValueError:
            # not the error's text: it can quote the URL, password and all
            return f"{where}not a valid URL (postgresql://user:password@host:port/database)"
        return None
    scheme = url.split(":", 1)[0] if ":" in url else url
    return f"{where}unsupported scheme {scheme[:20]!r} (sqlite:///path or postgresql://...)"


def load(path: str | os.PathLike[str]) -> Config:
    file = Path(path)
    display = str(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            display, [Problem(1, "(file)", f"cannot read the table: {exc}")]
        ) from None
    try:
        table = tableyaml.load_table(text)
    except tableyaml.TableSyntaxError as exc:
        raise ConfigError(display, [Problem(exc.line, "(yaml)", exc.message)]) from None
    return build(table, display, file)


def build(table: tableyaml.LoadedTable, display: str, file: Path) -> Config:
    errors: list[tuple[tableyaml.Path, str]] = []
    read: list[str] = []  # what the table's ${VAR} took from the environment

    def fail() -> ConfigError:
        # what the environment gave is never quoted: a secret in the wrong key (an API key where
        # a URL or a duration should be) would be printed to the logs at every start
        given = tuple(read)
        problems = [Problem(table.line_of(p), _key(p), mask(m, given)) for p, m in errors]
        problems.sort(key=lambda p: p.line)
        return ConfigError(display, problems)

    if not isinstance(table.data, dict):
        errors.append(((), "the table must be a mapping with sources, destinations and routes"))
        raise fail()
    data = _interpolate(table.data, (), errors, read)
    try:
        top = TableModel.model_validate(data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, ()))
        raise fail() from None

    sources: dict[str, SourceConfig] = {}
    for name, raw in top.sources.items():
        _validate_kind(raw, ("sources", name), SOURCE_MODELS, sources, name, errors)
    destinations: dict[str, DestinationConfig] = {}
    for name, raw in top.destinations.items():
        _validate_kind(raw, ("destinations", name), DESTINATION_MODELS, destinations, name, errors)

    from bridge import sources as source_registry  # a cycle otherwise: sources read the config

    routes: list[Route] = []
    for index, model in enumerate(top.routes):
        at: tableyaml.Path = ("routes", index)
        source, _, event = model.from_.partition("/")
        rule_kind: str | None = model.kind
        builtin = False  # the event has a built-in transaction (its amount and currency)
        if source not in top.sources:
            errors.append(((*at, "from"), f"no source named {source!r}"))
        elif source in sources:
            kind = sources[source].kind
            if "*" not in event and "?" not in event and "[" not in event:
                rule = source_registry.rules(kind).get(event)
                if rule is None and model.kind is None:
                    known = ", ".join(sorted(source_registry.rules(kind)))
                    errors.append(
                        (
                            (*at, "from"),
                            f"{kind} event {event!r} has no built-in transaction; "
                            f"add `kind: sale|refund` and fields (known: {known})",
                        )
                    )
                elif rule is not None:
                    rule_kind = rule.kind
                    builtin = True
        for position, target in enumerate(model.to):
            if target not in top.destinations:
                errors.append(((*at, "to", position), f"no destination named {target!r}"))
        when = None
        if model.when is not None:
            try:
                when = mapping.compile_expression(model.when)
            except mapping.ExpressionError as exc:
                errors.append(((*at, "when"), str(exc)))
        fields: dict[str, mapping.Expression] = {}
        for field_name, expression in model.fields.items():
            if field_name not in mapping.TXN_FIELDS:
                errors.append(
                    (
                        (*at, "fields", field_name),
                        f"unknown field (one of {', '.join(mapping.TXN_FIELDS)})",
                    )
                )
                continue
            try:
                fields[field_name] = mapping.compile_expression(expression)
            except mapping.ExpressionError as exc:
                errors.append(((*at, "fields", field_name), str(exc)))
        if model.kind is not None and rule_kind != model.kind:
            errors.append(
                ((*at, "kind"), f"the built-in transaction for {event!r} is a {rule_kind}")
            )
        elif model.kind is not None and not builtin:
            # the route's own fields are all there is: without these no event makes a transaction
            missing = [name for name in ("amount", "currency") if name not in model.fields]
            if missing:
                errors.append(
                    (
                        (*at, "fields" if model.fields else "kind"),
                        f"{' and '.join(missing)} required: kind: {model.kind} "
                        "has no built-in transaction to take them from",
                    )
                )
        routes.append(Route(index, source, event, tuple(model.to), when, model.kind, fields))

    for name, destination in destinations.items():
        # a send must be over (its timeout, plus a margin) before its lease can run out, or
        # another worker could claim and send it again meanwhile
        if destination.timeout + LEASE_MARGIN > top.delivery.lease:
            errors.append(
                (
                    ("destinations", name, "timeout"),
                    f"timeout {destination.timeout:g}s must be at least {LEASE_MARGIN:g}s shorter "
                    f"than delivery.lease ({top.delivery.lease:g}s)",
                )
            )

    database_url = resolve_database_url(top.storage.url, file)
    problem = _storage_problem(database_url)
    if problem:
        errors.append((("storage", "url"), problem))

    if errors:
        raise fail()

    secrets: list[str] = []
    for source_config in sources.values():
        secrets.extend(s.get_secret_value() for s in source_config.signing_secrets)
    for destination in destinations.values():
        secrets.extend(destination.secrets())
    # the password as libpq takes it: in the authority (user:password@) or as a parameter
    # (?password=...), each as written and decoded
    parts = urllib.parse.urlsplit(database_url)
    passwords = [parts.password or ""]
    passwords += [
        value
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if key == "password"
    ]
    passwords += [
        raw.partition("=")[2] for raw in parts.query.split("&") if raw.startswith("password=")
    ]
    for password in passwords:
        if password:
            secrets.append(urllib.parse.unquote(password))
            secrets.append(password)
    admin = top.admin
    if admin.token is None and os.environ.get("BRIDGE_ADMIN_TOKEN"):
        admin = AdminConfig(token=SecretStr(os.environ["BRIDGE_ADMIN_TOKEN"]))
    if admin.token is not None:
        secrets.append(admin.token.get_secret_value())

    return Config(
        file=display,
        sources=sources,
        destinations=destinations,
        routes=tuple(routes),
        storage=top.storage,
        delivery=top.delivery,
        server=top.server,
        admin=admin,
        retention=top.retention,
        database_url=database_url,
        _secrets=tuple(sorted({s for s in secrets if s}, key=len, reverse=True)),
    )


def _validate_kind(
    raw: Any,
    at: tableyaml.Path,
    models: Mapping[str, type[Any]],
    out: dict[str, Any],
    name: str,
    errors: list[tuple[tableyaml.Path, str]],
) -> None:
    if not isinstance(raw, dict):
        errors.append((at, "expected a mapping with a kind"))
        return
    kind = raw.get("kind")
    model = models.get(kind) if isinstance(kind, str) else None
    if model is None:
        errors.append(((*at, "kind"), f"unknown kind {kind!r} (one of {', '.join(models)})"))
        return
    try:
        out[name] = model.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, at))


def config_path(explicit: str | None) -> str:
    """``--config`` wins; else ``BRIDGE_CONFIG``; else ``bridge.yaml``."""
    return explicit or os.environ.get("BRIDGE_CONFIG") or "bridge.yaml"
