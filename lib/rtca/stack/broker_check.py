"""Is a Pulsar broker answering at the service URL? Its port accepting TCP is not enough: the admin API's (8080),
Superset's (8088), any service's does, and the user would learn it only from the ingest's or the functions' timeouts.

    broker_not_answering(settings, url, setting)   None, or why no broker of `url` answers (what `rtca status`, the
                                                   external backend, ingest's start check and its producer watchdog use)
    broker_setting(settings)                       the setting a user fixes when the broker URL is wrong

The check speaks the first words of Pulsar's binary protocol itself: a CONNECT with the token, answered by CONNECTED
(or an ERROR saying what the broker refused). Not through pulsar.Client: it reads the first four bytes of any answer
as a frame's size, and an HTTP server's "HTTP" is 1.2 GB, which it allocated (`rtca status` against the admin API's
port peaked at 1.2 GB); it retries a lookup well past its timeouts (17-24 s for 3 s); and the logger of a process's
first client is the logger of all its clients (the C++ client keeps the first), so a check's client would have
chosen where ingest's client logs.
"""

from __future__ import annotations

import socket
import ssl
import time
from urllib.parse import urlsplit

from rtca.settings import Settings
from rtca.stack.remote import verify_option

# --- the few bits of Pulsar's binary protocol (PulsarApi.proto) the check writes ------------------------------------
CONNECT, CONNECTED, ERROR, AUTH_CHALLENGE = 2, 3, 14, 36  # BaseCommand.Type (each in the field of that number)
AUTHENTICATION_ERROR = 3  # ServerError
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


def connect_frame(token: str | None = None) -> bytes:
    """A CONNECT (client_version, protocol_version, and the token as auth_method_name "token" and auth_data)."""
    auth = bytes_field(5, b"token") + bytes_field(3, token.encode()) if token is not None else b""
    return frame(CONNECT, bytes_field(1, b"rtca-broker-check") + int_field(4, 6) + auth)


def decode(data: bytes) -> dict[int, int | bytes]:
    """A protobuf message's fields, number -> value (varints and length-delimited ones, the last of a repeated one;
    fixed-size ones skipped): what the commands the check reads hold. ValueError for anything else."""
    fields: dict[int, int | bytes] = {}
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            if at >= len(data) or shift > 63:
                raise ValueError("a truncated or overlong varint")
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(data):
        key = varint()
        if key & 7 == 0:
            fields[key >> 3] = varint()
        elif key & 7 == 2:
            size = varint()
            if at + size > len(data):
                raise ValueError("a field longer than its message")
            fields[key >> 3] = data[at:at + size]
            at += size
        elif key & 7 in (1, 5):  # fixed 64 / 32 bits: none the check reads, skipped
            at += 8 if key & 7 == 1 else 4
        else:
            raise ValueError(f"wire type {key & 7}")
    return fields


# --- the check -------------------------------------------------------------------------------------------------------
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


def broker_not_answering(settings: Settings, service_url: str, setting: str, *,
                         timeout: float = 5.0) -> str | None:  # fmt: skip
    """None when a Pulsar broker of `service_url` answers a CONNECT (with the token) within `timeout` s, for the whole
    check, else why not, naming `setting`. A refused port fails at once; any broker of a list answering will do."""
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
            problem = _connect(settings, conn, scheme, host, deadline, timeout)
        if problem is None:
            return None
        problems.append(f"{address}: {problem}" if problem.startswith("the broker ") else
                        f"{address} accepts TCP connections but does not answer as a Pulsar broker: {problem}; "
                        f"does {setting} name another service's port? A broker's is 6650 (6651 with TLS)")
    if not problems:
        return f"{service_url} did not answer: {'; '.join(refused)}"
    return "; ".join(problems)


def _connect(settings: Settings, conn: socket.socket, scheme: str, host: str, deadline: float,
             timeout: float) -> str | None:  # fmt: skip
    """None when the peer answers a CONNECT as a broker that takes us, else what it did ("the broker ..." when it
    is a broker refusing something)."""
    token = settings.pulsar.auth_token.get_secret_value() if settings.pulsar.auth_token is not None else None
    # A broker closes the connection on a token it rejects (or answers an ERROR): closed is also what it does then.
    maybe_token = ", or it rejected RTCA_PULSAR__AUTH_TOKEN (a broker then closes the connection)" if token else ""
    try:
        if scheme == "pulsar+ssl":
            conn = _tls_context(settings).wrap_socket(conn, server_hostname=host)
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        conn.sendall(connect_frame(token))
        head = _receive(conn, 4)
        size = int.from_bytes(head, "big")
        if len(head) < 4:
            return (f"it answered {head!r}" if head else "it closed the connection without a word") + maybe_token
        if not 4 < size <= MAX_FRAME_BYTES:
            return f"it answered {head!r}, not a Pulsar frame"
        body = _receive(conn, size)
        command = decode(body[4:4 + int.from_bytes(body[:4], "big")])
    except ssl.SSLError as exc:
        return f"the TLS handshake failed ({exc.reason or exc})"
    except TimeoutError:
        return f"nothing came in Pulsar's binary protocol within {timeout:g} s{maybe_token}"
    except OSError as exc:
        return f"the connection failed ({exc}){maybe_token}"
    except ValueError as exc:
        return f"its answer is not a Pulsar command ({exc})"
    kind = command.get(1)
    if kind in (CONNECTED, AUTH_CHALLENGE):
        return None  # connected, or a broker asking the next step of an authentication
    if kind == ERROR:
        error = _fields(command.get(ERROR))
        message = error.get(3, b"")
        text = message.decode(errors="replace")[:200] if isinstance(message, bytes) else ""
        if error.get(2) == AUTHENTICATION_ERROR:
            return ("the broker rejected RTCA_PULSAR__AUTH_TOKEN" if token else
                    "the broker wants credentials: set RTCA_PULSAR__AUTH_TOKEN") + f" ({text})"
        return f"the broker refused the connection: error {error.get(2)} ({text})"
    return f"it answered a command of type {kind} to a CONNECT, not CONNECTED"


def _fields(data: int | bytes | None) -> dict[int, int | bytes]:
    try:
        return decode(data) if isinstance(data, bytes) else {}
    except ValueError:
        return {}


def _receive(conn: socket.socket, size: int) -> bytes:
    """Up to `size` bytes: fewer only when the peer closed the connection."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), 65536))
        if not chunk:
            break
        data += chunk
    return data


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """The trust the client has: the configured CA (or the system's), no host name check (the client's default)."""
    verify = verify_option(settings)
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    context.check_hostname = False
    if verify is False:
        context.verify_mode = ssl.CERT_NONE
    return context
