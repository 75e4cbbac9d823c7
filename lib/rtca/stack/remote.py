"""A running cluster seen only through its URLs: credentials, health checks and namespace set-up.

Shared by the `external` backend (someone else's Pulsar / Pinot / Superset) and the `docker` backend (containers
we start but reach like any remote service). Nothing here starts or stops a process.

    endpoints(settings)          what to check, in order: Pulsar admin + broker, Pinot controller + broker, Superset
                                 (the Pulsar broker's: `rtca.stack.broker_check`)
    check(settings)              health of every endpoint, as ServiceStates (never raises for an unhealthy one)
    require_healthy(settings)    the same, but one ServiceError naming every URL that did not answer
    prepare(settings)            namespace (retention, no inactive-topic deletion, partitioned auto-creation) and
                                 Superset's Pinot database: what `rtca deploy` needs before functions and tables
    http_options / pulsar_client_options    auth and TLS for httpx and pulsar.Client, from settings
    json_answer                  the JSON of an answer, or a DeployError naming the address that sent something else
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx

from rtca.errors import ConfigError, DeployError, ServiceError
from rtca.settings import Settings
from rtca.stack.process import ServiceState
from rtca.stack.profiles import profile


# --- credentials and TLS ------------------------------------------------------------------------------------------
def verify_option(settings: Settings) -> ssl.SSLContext | bool:
    """httpx's `verify`: the configured CA bundle, or the system store, or (verify=False) nothing."""
    tls = settings.tls
    if not tls.verify:
        return False
    if tls.ca_file is not None:
        if not tls.ca_file.is_file():
            raise ConfigError(f"TLS CA file {tls.ca_file} does not exist or is not a file",
                              hint="fix RTCA_TLS__CA_FILE")
        try:
            return ssl.create_default_context(cafile=str(tls.ca_file))
        except (ssl.SSLError, OSError) as exc:  # not PEM, no certificate in it, unreadable
            raise ConfigError(f"TLS CA file {tls.ca_file} holds no usable CA certificate: {exc}",
                              hint="RTCA_TLS__CA_FILE must be a PEM bundle of the cluster's CA(s)") from None
    return True


def origin(url: httpx.URL) -> str:
    """`scheme://host:port` of a URL: the address errors name (not its path, which says nothing about a wrong port)."""
    return f"{url.scheme}://{url.netloc.decode()}"


def json_answer(response: httpx.Response, what: str) -> Any:
    """The JSON body of an answer: one that is not JSON (a proxy's login page, another service on the port) is a
    DeployError naming the address, not a JSONDecodeError traceback."""
    try:
        return response.json()
    except ValueError:
        raise DeployError(f"could not {what}: HTTP {response.status_code} but not JSON "
                          f"({response.headers.get('content-type')}) from {origin(response.request.url)}",
                          hint="is that the service's address? `rtca config` shows the URLs in use") from None


def pulsar_topic_path(topic: str) -> str:
    """The admin REST path of a full topic name (`persistent://tenant/ns/t` -> `/admin/v2/persistent/tenant/ns/t`)."""
    return "/admin/v2/" + topic.replace("://", "/", 1)


def http_options(settings: Settings, service: str) -> dict[str, Any]:
    """Keyword arguments for `httpx.Client` / `httpx.get` talking to `service` (pulsar, pinot or superset)."""
    options: dict[str, Any] = {"verify": verify_option(settings)}
    if service == "pulsar" and settings.pulsar.auth_token is not None:
        options["headers"] = {"Authorization": f"Bearer {settings.pulsar.auth_token.get_secret_value()}"}
    elif service == "pinot" and settings.pinot.username:
        password = settings.pinot.password.get_secret_value() if settings.pinot.password else ""
        options["auth"] = httpx.BasicAuth(settings.pinot.username, password)
    return options


def pulsar_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `pulsar.Client(settings.pulsar.service_url, **options)`: token and TLS trust."""
    options: dict[str, Any] = {}
    if settings.pulsar.auth_token is not None:
        import pulsar

        options["authentication"] = pulsar.AuthenticationToken(settings.pulsar.auth_token.get_secret_value())
    if settings.tls.ca_file is not None:
        options["tls_trust_certs_file_path"] = str(settings.tls.ca_file)
    if not settings.tls.verify:
        options["tls_allow_insecure_connection"] = True
    return options


# --- health -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    name: str
    #: Shown to the user: the URL `rtca` was configured with.
    url: str
    #: What a failure tells the user to fix.
    setting: str
    probe: Callable[[], str | None]  # None = healthy, else why not


def _http_probe(settings: Settings, service: str, url: str, *, expect_json_list: bool = False,
                auth_url: str | None = None) -> Callable[[], str | None]:
    def probe() -> str | None:
        try:
            with httpx.Client(timeout=5.0, **http_options(settings, service)) as client:
                for target in filter(None, (url, auth_url)):
                    response = client.get(target)
                    if response.status_code in (401, 403):
                        return f"{target} rejected the credentials (HTTP {response.status_code})"
                    if response.status_code != 200:
                        return f"{target} answered HTTP {response.status_code}: {response.text[:200]}"
                    if expect_json_list and target == url and not isinstance(response.json(), list):
                        return f"{target} did not answer a list of clusters: {response.text[:200]}"
        except (httpx.HTTPError, ValueError, ssl.SSLError) as exc:
            return f"{url} did not answer: {type(exc).__name__}: {exc}"
        return None

    return probe


def endpoints(settings: Settings) -> list[Endpoint]:
    from rtca.stack.broker_check import broker_not_answering, broker_setting  # it builds on this module

    p, pinot, superset = settings.pulsar, settings.pinot, settings.superset
    return [
        Endpoint("pulsar-admin", p.admin_url, "RTCA_PULSAR__ADMIN_URL_OVERRIDE / RTCA_PULSAR__AUTH_TOKEN",
                 _http_probe(settings, "pulsar", f"{p.admin_url}/admin/v2/clusters", expect_json_list=True)),
        Endpoint("pulsar-broker", p.service_url, broker_setting(settings),
                 lambda: broker_not_answering(settings, p.service_url, broker_setting(settings))),
        # /health answers without credentials on a secured controller: /tables proves they are accepted.
        Endpoint("pinot-controller", pinot.controller_url,
                 "RTCA_PINOT__CONTROLLER_URL_OVERRIDE / RTCA_PINOT__USERNAME / RTCA_PINOT__PASSWORD",
                 _http_probe(settings, "pinot", f"{pinot.controller_url}/health",
                             auth_url=f"{pinot.controller_url}/tables")),
        Endpoint("pinot-broker", pinot.broker_url, "RTCA_PINOT__BROKER_URL_OVERRIDE",
                 _http_probe(settings, "pinot", f"{pinot.broker_url}/health")),
        Endpoint("superset", superset.url, "RTCA_SUPERSET__URL_OVERRIDE",
                 _http_probe(settings, "superset", f"{superset.url}/health")),
    ]  # fmt: skip


def check(settings: Settings, only: Collection[str] | None = None) -> list[tuple[ServiceState, str | None]]:
    """(state, reason it is unhealthy or None) per endpoint (of those named `only`)."""
    results = []
    for endpoint in endpoints(settings):
        if only is not None and endpoint.name not in only:
            continue
        problem = endpoint.probe()
        results.append((ServiceState(endpoint.name, None, problem is None, endpoint.url, None, note=problem or ""),
                        problem))
    return results


def status(settings: Settings) -> list[ServiceState]:
    return [state for state, _ in check(settings)]


def require_healthy(settings: Settings, only: Collection[str] | None = None, *,
                    hint: str | None = None) -> list[ServiceState]:  # fmt: skip
    """Every endpoint's state (of those named `only`); a ServiceError naming each URL that failed and `hint`, by
    default the setting to fix, otherwise."""
    results = check(settings, only)
    failed = [(state, problem) for state, problem in results if problem is not None]
    if failed:
        settings_of = {e.name: e.setting for e in endpoints(settings)}
        # ServiceError names the services first: one alone is not named again ("pinot-broker: pinot-broker: ...")
        lines = failed[0][1] if len(failed) == 1 else "; ".join(f"{s.name}: {problem}" for s, problem in failed)
        hint = hint or "check " + ", ".join(sorted({settings_of[state.name] for state, _ in failed}))
        raise ServiceError(", ".join(state.name for state, _ in failed), lines, hint=hint)
    return [state for state, _ in results]


# --- preparing a cluster for `rtca deploy` -------------------------------------------------------------------------
def superset_password_known(settings: Settings) -> bool:
    """True when Superset's admin password comes from settings or the environment: for a Superset rtca did not set
    up, a generated password would be wrong, and the run directory's secrets are those of one it did."""
    return bool(settings.superset.admin_password or os.environ.get("SUPERSET_ADMIN_PASSWORD"))


def require_superset_password(settings: Settings) -> None:
    """A ConfigError unless rtca set Superset up (its password is in the run directory) or the password is given."""
    if not profile(settings).manages_services and not superset_password_known(settings):
        raise ConfigError("Superset's admin password is not configured",
                          hint="set RTCA_SUPERSET__ADMIN_PASSWORD (and RTCA_SUPERSET__ADMIN_USER if not 'admin')")


def prepare(settings: Settings) -> None:
    """Idempotent: the Pulsar namespace with its policies, then Superset's Pinot database (fixed uuid).

    The local backend does the same inside `rtca up`; for `docker` it runs after the containers are healthy, for
    `external` it is the first step of `rtca deploy` (it needs tenant-admin rights on the namespace).
    """
    from rtca.stack import pulsar, superset

    pulsar.ensure_namespace(settings)
    partitions = profile(settings).topic_partitions
    if partitions > 1:
        _auto_create_partitioned(settings, partitions)
    require_superset_password(settings)
    superset.register_pinot(settings)


def _auto_create_partitioned(settings: Settings, partitions: int) -> None:
    """New topics of the workbench's namespace are created with `partitions` partitions (existing ones keep theirs:
    Pulsar can add partitions to a partitioned topic, never turn a non-partitioned one into one)."""
    p = settings.pulsar
    path = f"/admin/v2/namespaces/{p.tenant}/{p.namespace}/autoTopicCreation"
    body = {"allowAutoTopicCreation": True, "topicType": "partitioned", "defaultNumPartitions": partitions}
    with httpx.Client(base_url=p.admin_url, timeout=30, **http_options(settings, "pulsar")) as admin:
        response = admin.post(path, json=body)
    if not response.is_success:
        raise ServiceError("pulsar", f"could not set partitioned topic creation ({partitions} partitions): "
                                     f"HTTP {response.status_code} {response.text[:300]}")
