"""The loopback bind shim (infra/bindshim): wildcard binds move to RTCA_BIND_HOST, everything else is untouched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rtca.settings import load_settings
from rtca.stack import artifacts

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="the shim needs gcc")

#: Binds a listener of each kind and prints the addresses the kernel gave them.
PROBE = """
import json, socket
def listen(family, address, v6only=None, kind=socket.SOCK_STREAM):
    s = socket.socket(family, kind)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((address, 0))
    return s
v4, dual, v6only = listen(socket.AF_INET, "0.0.0.0"), listen(socket.AF_INET6, "::", 0), listen(socket.AF_INET6, "::", 1)
explicit, udp = listen(socket.AF_INET, "127.0.0.2"), listen(socket.AF_INET, "0.0.0.0", kind=socket.SOCK_DGRAM)
dual.listen()
reachable = socket.create_connection(("127.0.0.1", dual.getsockname()[1]), timeout=2) is not None
print(json.dumps({"v4": v4.getsockname()[0], "dual": dual.getsockname()[0], "v6only": v6only.getsockname()[0],
                  "explicit": explicit.getsockname()[0], "udp": udp.getsockname()[0], "reachable": reachable}))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shim = artifacts.bind_shim(load_settings(cache_dir=tmp_path_factory.mktemp("cache")))
    assert shim is not None and shim.exists()
    return shim


def probe(library: Path, host: str | None) -> dict[str, object]:
    env = {"LD_PRELOAD": str(library), **({"RTCA_BIND_HOST": host} if host is not None else {})}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_wildcard_binds_move_to_the_configured_host(library: Path) -> None:
    assert probe(library, "127.0.0.1") == {"v4": "127.0.0.1", "dual": "::ffff:127.0.0.1", "v6only": "::1",
                                           "explicit": "127.0.0.2", "udp": "0.0.0.0", "reachable": True}


@pytest.mark.parametrize("host", [None, "", "0.0.0.0", "::", "not-an-address"])
def test_no_host_or_a_wildcard_host_changes_nothing(library: Path, host: str | None) -> None:
    assert probe(library, host) == {"v4": "0.0.0.0", "dual": "::", "v6only": "::", "explicit": "127.0.0.2",
                                    "udp": "0.0.0.0", "reachable": True}


def test_bind_env_resolves_the_host_and_skips_wildcards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(cache_dir=tmp_path)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = artifacts.bind_env(settings, "localhost")
    assert env["RTCA_BIND_HOST"] == "127.0.0.1" and env["LD_PRELOAD"].endswith("libloopbackbind.so")
    assert artifacts.bind_env(settings, "0.0.0.0") == {} and artifacts.bind_env(settings, "::") == {}


def test_without_gcc_nothing_is_preloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(artifacts.shutil, "which", lambda name: None)
    monkeypatch.setattr(artifacts, "_shim_warned", False)
    assert artifacts.bind_env(load_settings(cache_dir=tmp_path), "127.0.0.1") == {}
    assert "gcc" in capsys.readouterr().err
