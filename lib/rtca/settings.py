"""The one typed configuration of the workbench.

Every host, port, URL, topic and table name of the stack and the feed lives here (and in the `infra/` files rendered
from it). Not here: the address of a replay or simulator server `rtca replay serve` / `rtca simulator serve` starts
(`--host`, default 127.0.0.1), the docker stack's Zookeeper, fixed at 127.0.0.1:2181 inside the containers
(`infra/docker/compose.yaml`: `RTCA_PINOT__ZOOKEEPER_PORT` is the local backend's only), and JupyterLab's, which
`make lab` starts on 127.0.0.1:8888 (`LAB_PORT`: it is no part of the stack, and Jupyter's own options apply).
Each field can be overridden from the environment with the `RTCA_` prefix, nested fields with `__`, e.g.
`RTCA_PULSAR__WEB_PORT=18080` or `RTCA_TOPICS__RAW=my-raw-topic`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, SecretStr
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from rtca.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout (`lib/rtca/settings.py` -> repo root); `infra/` and the default run directory live under it."""

Backend = Literal["local", "docker", "external"]
Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port (65536 and up would wrap around to another one)."""


def _host(value: str) -> str:
    if not value or ":" in value or "/" in value or any(c.isspace() for c in value):
        raise ValueError("a host name or IPv4 address (IPv6 literals are not supported: the services' address "
                         "settings take host:port without brackets)")
    return value


Host = Annotated[str, AfterValidator(_host)]
"""Where the local services listen and are reached; URLs are built from it."""


def _not_empty(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path (unset the variable for the default)")
    return value


Folder = Annotated[Path, BeforeValidator(_not_empty), AfterValidator(Path.expanduser)]
"""A directory given by a non-empty path (an empty RTCA_RUN_DIR= would make the current directory the run
directory); a leading ``~`` is the home folder (a quoted or .env value reaches us unexpanded)."""


def _base_url(value: Any) -> Any:
    """`http://host:9000/` and `http://host:9000` are one base URL: paths are appended to it (`{url}/health`), and a
    trailing slash would make them `//health`, which Pinot answers with 404."""
    return value.strip().rstrip("/") if isinstance(value, str) else value


def _checked_url(schemes: tuple[str, ...]) -> Any:
    def check(value: str) -> str:
        if not value:  # an empty variable (RTCA_PINOT__BROKER_URL_OVERRIDE=) means no override, as before
            return value
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            raise ValueError(f"{value!r} is not a {' or '.join(s + '://' for s in schemes)} URL")
        for address in rest.split("/", 1)[0].split(","):  # pulsar://host1:6650,host2:6650
            try:
                parts = urlsplit(f"//{address}")
                parts.port  # noqa: B018 - raises on a port that is not a number or out of range
            except ValueError as exc:
                raise ValueError(f"{value!r}: {exc}") from None
            if not parts.hostname:
                raise ValueError(f"{value!r} names no host")
        return value

    return AfterValidator(check)


BaseUrl = Annotated[str, BeforeValidator(_base_url), _checked_url(("http", "https"))]
"""An http(s) base URL given in the environment; stored without trailing slashes."""
PulsarUrl = Annotated[str, BeforeValidator(_base_url), _checked_url(("pulsar", "pulsar+ssl"))]
"""A Pulsar service URL (one or more brokers)."""
WebsocketUrl = Annotated[str, BeforeValidator(_base_url), _checked_url(("ws", "wss"))]
"""A websocket URL (a feed)."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _canonical_uuid(value: str) -> str:
    """A uuid in its one written form (an upper-case one is the same database, not another workbench)."""
    return str(UUID(value))


class PulsarSettings(_Section):
    version: str = "4.0.8"
    host: Host = "127.0.0.1"
    broker_port: Port = 6650
    web_port: Port = 8080
    #: The embedded bookie's port, taken when its data is created: a bookie started before keeps its first port.
    bookie_port: Port = 3181
    tenant: str = "feeds"
    namespace: str = "realtime"
    #: The namespace's retention: 7 days, as Pinot's tables keep theirs (`rtca pinot apply --recreate` rebuilds
    #: them from the topics, and a reader that fell behind finds its data); -1 keeps everything (the disk grows with
    #: the feed: a live level2 feed writes gigabytes a day), a size caps each topic in MB (the oldest goes first).
    retention_minutes: Annotated[int, Field(ge=-1)] = 7 * 24 * 60
    retention_mb: Annotated[int, Field(ge=-1)] = -1
    heap: str = "-Xms256m -Xmx768m -XX:MaxDirectMemorySize=384m"
    #: G1 instead of the distribution's ZGC with AlwaysPreTouch, which commits the whole heap at start (about
    #: 1 GB more resident for a standalone that needs a fraction of it).
    gc: str = "-XX:+UseG1GC -XX:+PerfDisableSharedMem"
    #: Set for the external backend: full URLs that win over host/port.
    service_url_override: PulsarUrl | None = None
    admin_url_override: BaseUrl | None = None
    auth_token: SecretStr | None = None

    @property
    def service_url(self) -> str:
        return self.service_url_override or f"pulsar://{self.host}:{self.broker_port}"

    @property
    def admin_url(self) -> str:
        return self.admin_url_override or f"http://{self.host}:{self.web_port}"


class PinotSettings(_Section):
    version: str = "0.11.0"
    host: Host = "127.0.0.1"
    cluster: str = "rtca"
    zookeeper_port: Port = 2191
    controller_port: Port = 9000
    broker_port: Port = 8099
    server_port: Port = 8098
    server_admin_port: Port = 8097
    server_grpc_port: Port = 8090  # local backend only: the docker image keeps its own, unpublished
    #: Heap and GC of each JVM; the serial collector suits the small ones (fewer threads competing at start).
    controller_heap: str = "-Xms128m -Xmx512m -XX:+UseSerialGC"
    broker_heap: str = "-Xms128m -Xmx512m -XX:+UseSerialGC"
    server_heap: str = "-Xms256m -Xmx1g"
    zookeeper_heap: str = "-Xms64m -Xmx256m -XX:+UseSerialGC"
    controller_url_override: BaseUrl | None = None
    broker_url_override: BaseUrl | None = None
    #: Basic auth of a secured Pinot (external backend): sent to the controller and the broker.
    username: str | None = None
    password: SecretStr | None = None
    #: The Pulsar stream plugin class in table configs; None = the backend's default (`rtca.stack.profiles`).
    consumer_factory: str | None = None

    @property
    def controller_url(self) -> str:
        return self.controller_url_override or f"http://{self.host}:{self.controller_port}"

    @property
    def broker_url(self) -> str:
        return self.broker_url_override or f"http://{self.host}:{self.broker_port}"

    @property
    def zookeeper_address(self) -> str:
        return f"{self.host}:{self.zookeeper_port}"


class SupersetSettings(_Section):
    version: str = "6.1.0"
    host: Host = "127.0.0.1"
    port: Port = 8088
    admin_user: str = "admin"
    #: These (RTCA_SUPERSET__*), else SUPERSET_ADMIN_PASSWORD / SUPERSET_SECRET_KEY, else generated once; kept under
    #: the run dir (`rtca.stack.secrets`).
    admin_password: SecretStr | None = None
    secret_key: SecretStr | None = None
    database_name: str = "Pinot"
    #: Stable so that the import bundle under infra/superset/ updates the registered database instead of colliding;
    #: another one gives the bundle's objects uuids of their own (`rtca.superset.bundle.own_ids`).
    database_uuid: Annotated[str, AfterValidator(_canonical_uuid)] = "5b1c7a4e-2f7d-4c59-9a51-7d0f1d2c3a10"
    url_override: BaseUrl | None = None

    @property
    def url(self) -> str:
        return self.url_override or f"http://{self.host}:{self.port}"


class Topics(_Section):
    """Short topic names inside `tenant/namespace`; `Settings.topic()` gives the full name."""

    raw: str = "coinbase-livefeed"
    ticker: str = "coinbase-ticker"
    matches: str = "coinbase-matches"
    level2: str = "coinbase-level2"
    heartbeat: str = "coinbase-heartbeat"
    status: str = "coinbase-status"
    rfq_matches: str = "coinbase-rfq-matches"
    auction: str = "coinbase-auction"
    control: str = "coinbase-control"
    dead_letter: str = "coinbase-dead-letter"
    ticker_stats: str = "coinbase-ticker-stats"
    book: str = "coinbase-book"
    trade_flow: str = "coinbase-trade-flow"
    volatility: str = "coinbase-volatility"
    alerts: str = "coinbase-alerts"
    #: The alerts function's state checkpoints (`rtca.functions.alerts`); compacted, read back after a restart.
    alerts_state: str = "coinbase-alerts-state"
    feed_health: str = "feed-health"


class Tables(_Section):
    """Pinot tables. Each is fed from the topic of the same `Topics` name, unless its table.json names another."""

    ticker: str = "coinbase_ticker"
    #: The latest ticker per product (an upsert table over the ticker topic): what "latest price" charts read.
    ticker_latest: str = "coinbase_ticker_latest"
    ticker_stats: str = "coinbase_ticker_stats"
    matches: str = "coinbase_matches"
    book: str = "coinbase_book"
    #: The order book per product and minute (Pinot aggregates the book topic's records as it ingests them).
    book_minute: str = "coinbase_book_minute"
    trade_flow: str = "coinbase_trade_flow"
    volatility: str = "coinbase_volatility"
    alerts: str = "coinbase_alerts"
    dead_letter: str = "coinbase_dead_letter"
    feed_health: str = "feed_health"


class FeedSettings(_Section):
    """Where the live feed comes from (`rtca ingest run|start --source coinbase`, `rtca record`; `--url` wins over
    it)."""

    #: Coinbase Exchange's public market-data websocket (no key needed for the channels ingest subscribes to);
    #: e.g. wss://ws-feed-public.sandbox.exchange.coinbase.com for the sandbox.
    coinbase_url: WebsocketUrl = "wss://ws-feed.exchange.coinbase.com"
    #: Ingest resubscribes a product's level2 channel (a fresh snapshot) when the book function reports its book
    #: crossed or without a snapshot on the alerts topic (`rtca.feed.resync`); false leaves that book dark until
    #: the next reconnect.
    resync_books: bool = True


class TlsSettings(_Section):
    """Trust for `https://` and `pulsar+ssl://` URLs of an external cluster (the local and docker stacks are plain)."""

    #: PEM bundle of the CA(s) that signed the cluster's certificates; None = the system trust store.
    ca_file: Path | None = None
    #: False accepts any certificate (a throwaway cluster with a self-signed one); never for real credentials.
    verify: bool = True


class ScaleSettings(_Section):
    """Sizes that grow with the cluster; None keeps the backend's default (`rtca.stack.profiles`)."""

    #: Partitions of each typed and derived topic (Pinot consumes each partition in parallel).
    topic_partitions: PositiveInt | None = None
    #: Replicas of each Pinot segment (at most the number of Pinot servers).
    pinot_replication: PositiveInt | None = None
    #: Instances of each Pulsar Function (on a partitioned input, up to one per partition does useful work).
    function_parallelism: PositiveInt | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RTCA_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    backend: Backend = "local"
    run_dir: Folder = PROJECT_ROOT / ".run"
    cache_dir: Folder = Path.home() / ".cache" / "rtca"
    #: Maven's local repository for the downloads and the plugin build. Unset, Maven's own choice under $HOME
    #: (`<localRepository>` of $HOME/.m2/settings.xml, else $HOME/.m2/repository).
    maven_repo: Folder | None = None
    infra_dir: Folder = PROJECT_ROOT / "infra"
    #: Seconds a service may take to become healthy before `rtca up` gives up and names its log.
    start_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 240.0
    #: Extra options for every JVM of the local stack. The default compiles with C1 only: the five JVMs then
    #: need about half the CPU to start (160 to 80 CPU-seconds on 2 cores, when it was chosen) at some cost in
    #: peak throughput; set it to "" for long throughput runs (docs/performance.md).
    jvm_options: str = "-XX:TieredStopAtLevel=1"

    pulsar: PulsarSettings = PulsarSettings()
    pinot: PinotSettings = PinotSettings()
    superset: SupersetSettings = SupersetSettings()
    topics: Topics = Topics()
    tables: Tables = Tables()
    tls: TlsSettings = TlsSettings()
    scale: ScaleSettings = ScaleSettings()
    feed: FeedSettings = FeedSettings()

    # --- derived -------------------------------------------------------------------------------------------------
    def topic(self, short_name: str) -> str:
        """Full `persistent://tenant/namespace/name` for a short topic name (a `Topics` value)."""
        return f"persistent://{self.pulsar.tenant}/{self.pulsar.namespace}/{short_name}"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.run_dir / "pids"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def secrets_dir(self) -> Path:
        return self.run_dir / "secrets"

    @cached_property
    def venv_dir(self) -> Path:
        """The Python environment rtca runs in (the checkout's `.venv`, a conda env, ...): function instances and
        the supervised ingest run with its interpreter and packages."""
        return Path(sys.prefix)

    @cached_property
    def rtca_command(self) -> list[str]:
        """How to run the `rtca` CLI of this environment as a process of its own."""
        return [sys.executable, "-m", "rtca.cli"]

    def describe(self) -> dict[str, Any]:
        """The effective configuration as plain JSON-able data (secrets masked), for `rtca config`."""
        data = json.loads(self.model_dump_json())
        data["urls"] = {
            "pulsar_service": self.pulsar.service_url,
            "pulsar_admin": self.pulsar.admin_url,
            "pinot_controller": self.pinot.controller_url,
            "pinot_broker": self.pinot.broker_url,
            "superset": self.superset.url,
        }
        data["full_topics"] = {key: self.topic(name) for key, name in self.topics.model_dump().items()}
        return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit keyword overrides on top (used by the CLI and tests); values of
    the wrong type or range are a `ConfigError` naming each, not pydantic's report. An `RTCA_*` variable that names
    no setting is a warning on stderr (once per process): the CLI's, a notebook's or a runbook's; one inside a
    section (`RTCA_PINOT__NOPE`) is an error, as the section refuses it, naming the section's settings."""
    unknown = unknown_variables(os.environ)
    for variable in unknown:
        section, _, field = variable.removeprefix("RTCA_").lower().partition("__")
        model = Settings.model_fields[section].annotation if section in Settings.model_fields else None
        if field and isinstance(model, type) and issubclass(model, BaseModel):
            known = ", ".join(f"RTCA_{section.upper()}__{name.upper()}" for name in model.model_fields)
            raise ConfigError(f"{variable} names no setting of the {section} section", hint=f"its settings: {known}")
    for variable in unknown:
        if variable not in _WARNED:
            _WARNED.add(variable)
            print(f"warning: {variable} names no setting and is ignored (sections and fields are separated by two "
                  f"underscores: RTCA_PINOT__BROKER_PORT)", file=sys.stderr)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{_source_of(e['loc'], overrides)}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}", hint=_SETTINGS_HINT) from None
    except SettingsError as exc:  # e.g. a section given as JSON that does not parse (RTCA_PINOT='{bad')
        raise ConfigError(f"invalid settings (RTCA_* environment variables): {exc}", hint=_SETTINGS_HINT) from None


def _source_of(loc: tuple[Any, ...], overrides: Mapping[str, Any]) -> str:
    """Where a refused value came from: `pinot.broker_port (RTCA_PINOT__BROKER_PORT)`, or a caller's argument (a
    runbook's `backend` parameter was blamed on the environment)."""
    path = ".".join(map(str, loc)) or "settings"
    if loc and loc[0] in overrides:
        return f"{path} (given as a parameter)"
    return f"{path} (RTCA_{'__'.join(str(part).upper() for part in loc)})" if loc else path


#: Not `rtca config`: it reads the same settings and fails the same way.
_SETTINGS_HINT = ("fix or unset the variable (or parameter) named; the settings and their defaults are in "
                  "lib/rtca/settings.py (`rtca config` prints them once they load)")

#: `RTCA_*` variables that are not settings: set by rtca for its own processes, or read by the tests.
NOT_SETTINGS = frozenset({"RTCA_BIND_HOST", "RTCA_KEEP_STACK"})
#: The variables `infra/docker/compose.yaml` interpolates (rendered from settings by `rtca.stack.docker`).
COMPOSE_PREFIX = "RTCA_COMPOSE_"
_WARNED: set[str] = set()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """`RTCA_*` variables that name no setting (a typo: `RTCA_PINOT_BROKER_PORT` for `RTCA_PINOT__BROKER_PORT`),
    which the settings would ignore without a word."""
    return sorted(key for key in environ if key.startswith("RTCA_") and key not in NOT_SETTINGS
                  and not key.startswith(COMPOSE_PREFIX) and not setting_exists(key))


def name_list(names: str | Iterable[str] | None) -> list[str] | None:
    """Names given as a list or as one comma-separated string (a papermill `-p functions coinbase-router`
    parameter, which is a string: taken as a list it would be its letters), also written as a YAML list
    (`-p products '[BTC-USD, ETH-USD]'`, which papermill's `-p` passes as that text); None stays None (all)."""
    if names is None:
        return None
    if isinstance(names, str):
        text = names.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        names = [name.strip().strip("'\"").strip() for name in text.split(",")]
    elif not isinstance(names, (list, tuple, set, frozenset)):  # `-p tables 5`: papermill passes the number
        raise ConfigError(f"expected names, got {type(names).__name__} {names!r}",
                          hint="a list of names, or one comma-separated string, e.g. ticker,matches")
    wanted = [str(name).strip() for name in names if str(name).strip()]
    if not wanted:  # an empty papermill parameter would otherwise select nothing and report success
        raise ConfigError("an empty selection of names", hint="omit it for all, or name some")
    return wanted


def setting_exists(variable: str) -> bool:
    """Whether an `RTCA_*` environment variable names a field of `Settings` (`RTCA_PINOT__BROKER_PORT` does,
    `RTCA_PINOT_BROKER_PORT` does not: unknown ones are otherwise ignored without a word)."""
    if not variable.startswith("RTCA_"):
        return False
    model: type[BaseModel] | None = Settings
    for part in variable.removeprefix("RTCA_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True
