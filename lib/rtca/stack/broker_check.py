"""Is a Pulsar broker answering at the service URL? Its port accepting TCP is not enough: the admin API's (8080),
Superset's (8088), any service's does, and the user would learn it only from the ingest's or the functions' timeouts.

    broker_not_answering(settings, url, setting)   None, or why no broker of `url` answers (what `rtca status`, the
                                                   external backend and ingest's start check use)
    broker_unreachable(url)                        the TCP part alone: a quick sign for ingest's producer watchdog
    broker_setting(settings)                       the setting a user fixes when the broker URL is wrong

The check speaks the first words of Pulsar's binary protocol itself (a CONNECT, and the size word of the answer)
before it lets the client look a topic up: the client reads the first four bytes of any answer as a frame's size, and
an HTTP server's "HTTP" is 1.2 GB, which it allocated (`rtca status` against the admin API's port peaked at 1.2 GB).
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from rtca.settings import Settings
from rtca.stack.remote import pulsar_client_options, verify_option

# --- the few bits of Pulsar's binary protocol (PulsarApi.proto) the check writes ------------------------------------
CONNECT, CONNECTED, ERROR = 2, 3, 14  # BaseCommand.Type
MAX_FRAME_BYTES = 5 * 1024 * 1024 + 64 * 1024
"""A broker's frames are at most its message size limit (5 MiB by default) plus headers: a larger size word is not
Pulsar talking."""


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def int_field(field: int, value: int) -> bytes:
    return varint(field << 3) + varint(value)


def bytes_field(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value


def frame(kind: int, body: bytes | None) -> bytes:
    """[total size][command size][BaseCommand{type, the command in the field numbered as its type}]"""
    command = int_field(1, kind) + (bytes_field(kind, body) if body is not None else b"")
    return (len(command) + 4).to_bytes(4, "big") + len(command).to_bytes(4, "big") + command


def connect_frame() -> bytes:
    """A CONNECT without credentials (client_version, protocol_version): a broker answers CONNECTED, or an ERROR
    when it wants credentials; either is a frame of a few bytes."""
    return frame(CONNECT, bytes_field(1, b"rtca-broker-check") + int_field(4, 6))


# --- the check -------------------------------------------------------------------------------------------------------
#: The namespace the client looks a topic up in. One that does not exist: the broker answers TopicNotFound and
#: creates nothing. A missing topic of the configured namespace would be created when the namespace auto-creates
#: partitioned topics (`prepare` on scaled profiles): the C++ client's lookup does not send PIP-344's
#: `metadata_auto_creation_enabled=false`.
_PROBE_NAMESPACE = "rtca-health-check-no-such-namespace"


def broker_setting(settings: Settings) -> str:
    """The setting to fix when no broker answers at `settings.pulsar.service_url`."""
    if settings.pulsar.service_url_override:
        return "RTCA_PULSAR__SERVICE_URL_OVERRIDE"
    return "RTCA_PULSAR__HOST / RTCA_PULSAR__BROKER_PORT"


def _addresses(service_url: str) -> tuple[str, list[tuple[str, int]]] | str:
    """(scheme, [(host, port)]) of a pulsar:// or pulsar+ssl:// URL (a list of brokers: pulsar://h1:6650,h2:6650/),
    else why it is not one."""
    scheme, _, hosts = service_url.partition("://")
    default_port = 6651 if scheme == "pulsar+ssl" else 6650
    addresses = [a for a in hosts.split("/", 1)[0].split(",") if a]
    if scheme not in ("pulsar", "pulsar+ssl") or not addresses:
        return f"{service_url} is not a pulsar:// or pulsar+ssl:// URL"
    parsed = []
    for address in addresses:
        try:
            parts = urlsplit(f"//{address}")
            parsed.append((parts.hostname or "", parts.port or default_port))
        except ValueError:  # not a host:port
            parsed.append((address, 0))
    return scheme, parsed


def broker_unreachable(service_url: str, *, timeout: float = 5.0) -> str | None:
    """None when a broker of `service_url` accepts a TCP connection, else why none did: a quick sign that the broker
    is up (`rtca.feed.sinks`), not a proof that it is Pulsar (`broker_not_answering` is). The client takes any broker
    of a list, so one is enough."""
    parsed = _addresses(service_url)
    if isinstance(parsed, str):
        return parsed
    failures = []
    for host, port in parsed[1]:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except (OSError, OverflowError) as exc:  # refused, unresolvable, port 0
            failures.append(f"{host}:{port}: {exc}")
    return f"{service_url} did not answer: {'; '.join(failures)}"


def broker_not_answering(settings: Settings, service_url: str, setting: str, *,
                         timeout: float = 5.0) -> str | None:  # fmt: skip
    """None when a Pulsar broker of `service_url` answers a lookup within `timeout` s (for the whole check), else why
    not, naming `setting`. A refused port fails at once, with the TCP message; any broker of a list answering will do.
    """
    parsed = _addresses(service_url)
    if isinstance(parsed, str):
        return parsed
    scheme, hosts = parsed
    deadline = time.monotonic() + timeout
    refused, problems = [], []
    for host, port in hosts:
        try:
            conn = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
        except (OSError, OverflowError) as exc:
            refused.append(f"{host}:{port}: {exc}")
            continue
        address = f"{scheme}://{host}:{port}"
        with conn:
            problem = _first_words(settings, conn, scheme, host, deadline, timeout)
        if problem is None:
            problem = _looked_up(settings, address, deadline)
            if problem is None:
                return None
        problems.append(f"{address} accepts TCP connections but does not answer as a Pulsar broker: {problem}; "
                        f"does {setting} name another service's port? A broker's is 6650 (6651 with TLS)")
    if not problems:
        return f"{service_url} did not answer: {'; '.join(refused)}"
    return "; ".join(problems)


def _first_words(settings: Settings, conn: socket.socket, scheme: str, host: str, deadline: float,
                 timeout: float) -> str | None:  # fmt: skip
    """None when the peer answers a CONNECT with something of a Pulsar frame's size, else what it did."""
    try:
        if scheme == "pulsar+ssl":
            conn = _tls_context(settings).wrap_socket(conn, server_hostname=host)
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        conn.sendall(connect_frame())
        head = b""
        while len(head) < 4:
            chunk = conn.recv(4 - len(head))
            if not chunk:
                return "it closed the connection without a word" if not head else f"it answered {head!r}"
            head += chunk
    except ssl.SSLError as exc:
        return f"the TLS handshake failed ({exc.reason or exc})"
    except TimeoutError:
        return f"nothing came in Pulsar's binary protocol within {timeout:g} s"
    except OSError as exc:
        return f"the connection failed ({exc})"
    size = int.from_bytes(head, "big")
    return None if 4 < size <= MAX_FRAME_BYTES else f"it answered {head!r}, not a Pulsar frame"


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The trust the client has: the configured CA (or the system's), no host name check (the client's default)."""
    verify = verify_option(settings)
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    context.check_hostname = False
    if verify is False:
        context.verify_mode = ssl.CERT_NONE
    return context


def _looked_up(settings: Settings, address: str, deadline: float) -> str | None:
    """None when the client's partitioned-metadata lookup at `address` is answered before `deadline`, else why not.
    Bounded here: on a port that answers something else, the client retries its lookup well past its operation
    timeout (17 to 24 s for a 3 s timeout against the admin API's port).

    The client's own log lines (connection closed, handshake failed, lookup failed) go nowhere: the caller says in one
    line what went wrong. Not to a Python logger: the client's threads, still logging a lookup cut short, called into
    a finishing interpreter and aborted the process at exit (2 runs in 8)."""
    import pulsar

    left = max(0.5, deadline - time.monotonic())
    client = pulsar.Client(address, operation_timeout_seconds=max(1, math.ceil(left)),
                           connection_timeout_ms=int(left * 1000),
                           logger=pulsar.FileLogger(pulsar.LoggerLevel.Error, os.devnull),
                           **pulsar_client_options(settings))
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            client.get_topic_partitions(f"persistent://{settings.pulsar.tenant}/{_PROBE_NAMESPACE}/probe")
            outcome.append(None)
        except Exception as exc:  # the client's errors, reported below
            outcome.append(exc)

    try:
        thread = threading.Thread(target=lookup, name="pulsar-broker-check", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        came = list(outcome)  # in time: a lookup that close() cuts short returns no partitions and no error
    finally:
        client.close()  # also ends a lookup still retrying
    answer = came[0] if came else None
    if came and (answer is None or isinstance(answer, (pulsar.TopicNotFound, pulsar.AuthorizationError))):
        return None  # the broker answered (no such namespace, or not ours to look up in)
    if not came or isinstance(answer, (pulsar.ConnectError, pulsar.Timeout)):
        why = "" if answer is None else f" ({type(answer).__name__})"
        # A broker closes the connection on a token it rejects: to the client, that is a peer that answered nothing.
        token = (", or it rejected RTCA_PULSAR__AUTH_TOKEN (a broker then closes the connection)"
                 if settings.pulsar.auth_token is not None else "")
        return f"no lookup was answered in time{why}{token}"
    return f"a lookup failed: {type(answer).__name__} ({answer})"  # e.g. a CA file that cannot be read
