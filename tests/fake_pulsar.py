"""Loopback TCP peers for unit tests of the Pulsar broker check: a port that accepts and says nothing, one that answers
as an HTTP server does (another service's port), one that rejects credentials as a broker does, and a minimal broker
(CONNECT, and the partitioned-metadata lookup a client makes first, hand-encoded protobuf)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rtca.stack.broker_check import (AUTHENTICATION_ERROR, CONNECT, CONNECTED, ERROR, bytes_field, decode, frame,
                                     int_field)

# BaseCommand types and the fields that carry them (PulsarApi.proto)
PARTITIONED_METADATA, PARTITIONED_METADATA_RESPONSE, PING, PONG = 21, 22, 18, 19


@contextmanager
def tcp_serving(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """`handle` each connection accepted on a free loopback port (one thread each); yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                handle(conn)
            except OSError:
                pass  # the client gave up first

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def silent(conn: socket.socket) -> None:
    """Reads whatever comes and never answers (a service waiting for its own protocol's first words)."""
    while conn.recv(4096):
        pass


def http_error(conn: socket.socket) -> None:
    """What an HTTP server answers to bytes that are not HTTP, then closes (the admin API's port, Superset's)."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


def rejecting_credentials(conn: socket.socket) -> None:
    """What a broker does with a token it rejects: an AuthenticationError for the CONNECT, then it closes."""
    if _read_frame(conn) is not None:
        error = int_field(1, 2**64 - 1) + int_field(2, AUTHENTICATION_ERROR) + bytes_field(3, b"Unauthorized")
        conn.sendall(frame(ERROR, error))


def pulsar_broker(looked_up: list[str]) -> Callable[[socket.socket], None]:
    """A broker answering CONNECT and partitioned-metadata lookups (0 partitions); appends each topic looked up."""

    def handle(conn: socket.socket) -> None:
        while (data := _read_frame(conn)) is not None:
            command = decode(data)
            kind = command[1]
            if kind == CONNECT:
                version = decode(command[CONNECT]).get(4, 0)  # protocol_version
                conn.sendall(frame(CONNECTED, bytes_field(1, b"fake-broker") + int_field(2, version)))
            elif kind == PARTITIONED_METADATA:
                request = decode(command[PARTITIONED_METADATA])
                looked_up.append(request[1].decode())
                answer = int_field(1, 0) + int_field(2, request[2]) + int_field(3, 0)  # 0 partitions, request id, OK
                conn.sendall(frame(PARTITIONED_METADATA_RESPONSE, answer))
            elif kind == PING:
                conn.sendall(frame(PONG, None))

    return handle


# --- reading frames (writing them: rtca.stack.broker_check) ------------------------------------------------------
def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> bytes | None:
    """The BaseCommand of the next frame (commands without payload: all a lookup sends), None once closed."""
    head = _read_exactly(conn, 8)
    if head is None:
        return None
    total, size = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")
    command = _read_exactly(conn, size)
    if total > size + 4:
        _read_exactly(conn, total - size - 4)
    return command
