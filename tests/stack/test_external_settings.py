"""The external backend's settings as a user gives them: TLS with a private CA reaches every HTTP client (Pulsar
admin, function deploy, Superset), override URLs are checked and normalised, and nothing is made up for a cluster
rtca did not set up. The TLS peer is a loopback HTTPS server with a certificate from a CA made for the test."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from rtca.errors import ConfigError
from rtca.functions import deploy
from rtca.settings import Settings, load_settings
from rtca.stack import broker_check, pulsar, remote
from rtca.stack.secrets import superset_secrets
from rtca.stack.superset import pinot_passwords, pinot_sqlalchemy_uri
from rtca.superset.client import SupersetClient
from fake_pulsar import http_error, pulsar_broker, rejecting_credentials, silent, tcp_serving
from ports import open_and_refusing_ports


class AdminPeer(BaseHTTPRequestHandler):
    """Answers what Pulsar's admin API and Superset's login answer; remembers the requests."""

    seen: list[str] = []

    def _answer(self, body: object = None, status: int = 200) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status if body is not None else 204)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        answers = {"/admin/v2/clusters": ["standalone"], "/api/v1/security/csrf_token/": {"result": "c"}}
        self._answer(answers.get(self.path))

    def do_PUT(self) -> None:  # noqa: N802
        self._answer()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"access_token": "t"} if self.path == "/api/v1/security/login" else None)

    def log_message(self, *args: object) -> None:
        pass


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(https base URL, CA file) of a loopback admin peer whose certificate only that CA signed."""
    folder = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rtca test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "srv.key",
             "-out", "srv.csr", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "ext.cnf", "-out", "srv.pem", cwd=folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), AdminPeer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "srv.pem", folder / "srv.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", folder / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()


def external(url: str, tmp_path: Path, **tls: object) -> Settings:
    return load_settings(backend="external", run_dir=tmp_path / "run", tls=tls,
                         pulsar={"admin_url_override": url, "service_url_override": "pulsar+ssl://127.0.0.1:1"},
                         superset={"url_override": url, "admin_password": "given"})


def test_a_private_ca_reaches_namespace_set_up_function_deploy_and_superset(tls_peer: tuple[str, Path],
                                                                            tmp_path: Path) -> None:  # fmt: skip
    url, ca = tls_peer
    AdminPeer.seen = []
    for trusted in (external(url, tmp_path, ca_file=ca), external(url, tmp_path, verify=False)):
        pulsar.ensure_namespace(trusted)
        with deploy._admin(trusted) as admin:
            assert admin.get("/admin/v2/clusters").json() == ["standalone"]
        SupersetClient.from_settings(trusted).close()
    assert AdminPeer.seen.count("POST /admin/v2/namespaces/feeds/realtime/deduplication") == 2
    assert AdminPeer.seen.count("POST /api/v1/security/login") == 2
    untrusted = external(url, tmp_path)  # the system's CAs: this certificate is refused
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        pulsar.ensure_namespace(untrusted)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        SupersetClient.from_settings(untrusted)


def test_a_ca_file_that_is_not_a_pem_bundle_is_a_config_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for ca_file, says in ((not_pem, "no usable CA certificate"), (tmp_path, "is not a file")):
        with pytest.raises(ConfigError, match=says):
            remote.http_options(load_settings(tls={"ca_file": ca_file}), "pulsar")


def test_superset_without_a_configured_password_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    """A generated password could only fail the login of a Superset rtca did not set up, and once stored it would
    pass for configured."""
    settings = load_settings(backend="external", run_dir=tmp_path / "run",
                             superset={"url_override": "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="admin password is not configured"):
        SupersetClient.from_settings(settings)
    assert not (settings.secrets_dir / "superset.json").exists()
    assert not remote.superset_password_known(settings)


def test_an_external_superset_s_password_is_never_stored_nor_read_from_the_run_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password given once (maybe mistyped, maybe refused) must not pass for configured on the next run, and the
    run directory's secrets belong to a Superset rtca set up, not to this one."""
    settings = load_settings(backend="external", run_dir=tmp_path / "run",
                             superset={"url_override": "http://127.0.0.1:1"})
    monkeypatch.setenv("SUPERSET_ADMIN_PASSWORD", "maybe-wrong")
    with pytest.raises(httpx.ConnectError):
        SupersetClient.from_settings(settings)
    assert not (settings.secrets_dir / "superset.json").exists()
    monkeypatch.delenv("SUPERSET_ADMIN_PASSWORD")
    superset_secrets(load_settings(run_dir=tmp_path / "run"))  # a local stack's, in the same run directory
    with pytest.raises(ConfigError, match="admin password is not configured"):
        SupersetClient.from_settings(settings)


@pytest.mark.parametrize("field, given, kept", [
    ("pinot", "http://pinot.example.com:9000/", "http://pinot.example.com:9000"),
    ("superset", "https://bi.example.com//", "https://bi.example.com"),
    ("pulsar", "pulsar+ssl://a.example.com:6651,b.example.com:6651/", "pulsar+ssl://a.example.com:6651,"
                                                                      "b.example.com:6651"),
])
def test_override_urls_are_kept_without_trailing_slashes(field: str, given: str, kept: str) -> None:
    key = {"pinot": "controller_url_override", "superset": "url_override", "pulsar": "service_url_override"}[field]
    settings = load_settings(backend="external", **{field: {key: given}})
    assert getattr(getattr(settings, field), key) == kept


@pytest.mark.parametrize("env, value", [
    ("RTCA_PINOT__CONTROLLER_URL_OVERRIDE", "http://[::1"),
    ("RTCA_PINOT__BROKER_URL_OVERRIDE", "localhost:8099"),
    ("RTCA_PULSAR__SERVICE_URL_OVERRIDE", "pulsar://[::1"),
    ("RTCA_PULSAR__SERVICE_URL_OVERRIDE", "http://broker:6650"),
    ("RTCA_SUPERSET__URL_OVERRIDE", "https://:8088"),
    ("RTCA_PULSAR__ADMIN_URL_OVERRIDE", "http://admin:notaport"),
])
def test_a_malformed_override_url_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, env: str,
                                                              value: str) -> None:  # fmt: skip
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert value in str(error.value)


def test_superset_reaches_a_pinot_with_basic_auth(tmp_path: Path) -> None:
    """The user is in the database URI (pinotdb sends it to broker and controller), the password goes separately,
    as Superset's import takes it, and never into the bundle."""
    settings = load_settings(pinot={"username": "an@lyst", "password": "s3cret"})
    uri = pinot_sqlalchemy_uri(settings)
    assert uri.startswith("pinot+http://an%40lyst:XXXXXXXXXX@127.0.0.1:") and "s3cret" not in uri
    assert pinot_passwords(settings, "databases/Pinot.yaml") == {"databases/Pinot.yaml": "s3cret"}
    plain = load_settings()
    assert "@" not in pinot_sqlalchemy_uri(plain) and pinot_passwords(plain, "databases/Pinot.yaml") == {}


def test_a_pulsar_url_of_several_brokers_is_healthy_when_one_answers() -> None:
    """The client takes any broker of the list: the check did only look at the first, then at the first that
    accepted TCP (another service's port first in the list failed it)."""
    settings = load_settings(backend="external")
    check = broker_check.broker_not_answering
    with open_and_refusing_ports() as (_, down), tcp_serving(pulsar_broker([])) as up, tcp_serving(http_error) as web:
        assert check(settings, f"pulsar://127.0.0.1:{down},127.0.0.1:{up}", "S") is None
        assert check(settings, f"pulsar://127.0.0.1:{web},127.0.0.1:{up}", "S") is None
        assert "did not answer" in (check(settings, f"pulsar://127.0.0.1:{down}", "S") or "")


@pytest.fixture
def no_pulsar_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check speaks the protocol itself: the client read "HTTP" as a 1.2 GB frame size and allocated it, retried
    past its timeouts, and the first client of a process sets the logger of all its clients (ingest's too)."""
    import pulsar

    monkeypatch.setattr(pulsar, "Client", lambda *_, **__: pytest.fail("the broker check made a pulsar.Client"))


def test_an_http_answer_is_no_pulsar_frame(no_pulsar_client: None) -> None:
    with tcp_serving(http_error) as port:
        problem = broker_check.broker_not_answering(load_settings(), f"pulsar://127.0.0.1:{port}", "S") or ""
    assert "does not answer as a Pulsar broker: it answered b'HTTP', not a Pulsar frame" in problem, problem


def test_a_frame_sized_answer_that_is_no_command_is_not_a_broker() -> None:
    """Four bytes of a plausible size are not enough: what follows must decode as a command, and be CONNECTED."""
    def garbage(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall((9).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x0f\xff\xff\xff\xff")

    with tcp_serving(garbage) as port:
        problem = broker_check.broker_not_answering(load_settings(), f"pulsar://127.0.0.1:{port}", "S", timeout=1)
    assert problem is not None and "its answer is not a Pulsar command" in problem, problem


def test_the_broker_check_connects_and_looks_nothing_up(no_pulsar_client: None) -> None:
    """A lookup of a missing topic makes the broker create it where the namespace auto-creates partitioned topics:
    a CONNECT answered is the proof, and creates nothing."""
    looked_up: list[str] = []
    with tcp_serving(pulsar_broker(looked_up)) as port:
        assert broker_check.broker_not_answering(load_settings(), f"pulsar://127.0.0.1:{port}", "S") is None
    assert looked_up == []


@pytest.mark.parametrize("peer", [silent, http_error], ids=["silent", "http"])
def test_a_port_that_accepts_tcp_but_is_not_pulsar_is_unhealthy_and_says_so(
        peer: Callable[[socket.socket], None], capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """The admin API's port (8080), Superset's (8088), any TCP service passed the check that only connected: the
    user learnt it from the ingest's and the functions' timeouts. Bounded in time, and silent."""
    settings = load_settings(backend="external")
    with tcp_serving(peer) as port:
        start = time.monotonic()
        problem = broker_check.broker_not_answering(settings, f"pulsar://127.0.0.1:{port}",
                                                    "RTCA_PULSAR__SERVICE_URL_OVERRIDE", timeout=1)
        took = time.monotonic() - start
    assert problem is not None and problem.startswith(f"pulsar://127.0.0.1:{port} accepts TCP connections but does "
                                                      "not answer as a Pulsar broker"), problem
    assert "RTCA_PULSAR__SERVICE_URL_OVERRIDE" in problem and "6650" in problem
    assert took < 3, f"{took:.1f} s"
    assert capfd.readouterr() == ("", "")


def test_a_broker_refusing_the_token_or_wanting_one_says_so(no_pulsar_client: None) -> None:
    """A broker answers a CONNECT with a token it rejects by an AuthenticationError: said as such, not as a port of
    another service, and without the token."""
    with tcp_serving(rejecting_credentials) as port:
        url = f"pulsar://127.0.0.1:{port}"
        rejected = broker_check.broker_not_answering(load_settings(pulsar={"auth_token": "not-the-token"}), url, "S")
        wanted = broker_check.broker_not_answering(load_settings(), url, "S")
    assert rejected == f"{url}: the broker rejected RTCA_PULSAR__AUTH_TOKEN (Unauthorized)", rejected
    assert wanted == f"{url}: the broker wants credentials: set RTCA_PULSAR__AUTH_TOKEN (Unauthorized)", wanted
    with tcp_serving(silent) as port:  # closing or saying nothing may be a rejected token, when there is one
        assert "TOKEN" in (broker_check.broker_not_answering(load_settings(pulsar={"auth_token": "t"}),
                                                             f"pulsar://127.0.0.1:{port}", "S", timeout=1) or "")
        assert "TOKEN" not in (broker_check.broker_not_answering(load_settings(), f"pulsar://127.0.0.1:{port}", "S",
                                                                 timeout=1) or "TOKEN")


def test_a_refused_broker_port_fails_at_once() -> None:
    with open_and_refusing_ports() as (_, port):
        start = time.monotonic()
        problem = broker_check.broker_not_answering(load_settings(), f"pulsar://127.0.0.1:{port}", "S")
    assert time.monotonic() - start < 1
    assert problem is not None and "refused" in problem
    assert problem.startswith(f"pulsar://127.0.0.1:{port} did not answer: "), problem


def test_status_names_a_broker_url_that_is_not_pulsar(monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint's check is the protocol one, with the setting to fix (`rtca status` shows the note alone)."""
    with tcp_serving(http_error) as port:
        settings = load_settings(backend="external", pulsar={"service_url_override": f"pulsar://127.0.0.1:{port}"})
        [(broker, _)] = remote.check(settings, only={"pulsar-broker"})
    assert not broker.healthy and "does not answer as a Pulsar broker" in broker.note
    assert "RTCA_PULSAR__SERVICE_URL_OVERRIDE" in broker.note


def test_down_wipe_on_external_says_nothing_was_wiped(tmp_path: Path) -> None:
    env = {**os.environ, "RTCA_BACKEND": "external", "RTCA_RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "rtca.cli", "down", "--wipe"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "deletes nothing" in done.stdout + done.stderr and "data wiped" not in done.stdout


def test_status_of_an_endpoint_that_does_not_answer_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    from rtca.cli import _print_states

    with open_and_refusing_ports() as (_, port):
        settings = load_settings(backend="external", pulsar={"service_url_override": f"pulsar://127.0.0.1:{port}"})
        broker = next(state for state in remote.status(settings) if state.url == f"pulsar://127.0.0.1:{port}")
    assert not broker.healthy and "did not answer" in broker.note
    _print_states([broker])
    line = capsys.readouterr().out.splitlines()[1]
    assert " DOWN " in line and "did not answer" in line
