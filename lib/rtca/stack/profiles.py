"""The one place for what differs between backends; everything else (topics, tables, functions, dashboards) is shared.

                         local                        docker                        external
    Pinot                0.11.0 + rtca's plugin       apachepinot/pinot 1.x image   your cluster (1.x)
    consumer factory     io.rtca...Factory            org.apache.pinot...Factory    org.apache.pinot...Factory
    topic partitions     1                            1                             1
    Pinot replication    1                            1                             1
    function parallelism 1                            1                             1
    function code        `rtca` from the virtualenv   uploaded zip of `rtca`        uploaded zip of `rtca`
    `rtca up`            starts local processes       `docker compose up`           checks that the URLs answer

Sizes come from `settings.scale` when set (RTCA_SCALE__TOPIC_PARTITIONS=4 ...; partitions are made by `rtca.stack.
remote.prepare`, which `rtca deploy` runs on every backend: on the local one only to try the scaling path, since one
broker gains nothing from them), the consumer factory from
`settings.pinot.consumer_factory` (e.g. an external Pinot 0.11 that runs rtca's plugin). Table configs and function
deployment read these values through `profile(settings)`, never `settings.backend` directly.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rtca.errors import ConfigError
from rtca.settings import Backend, Settings

#: rtca's own plugin (infra/pinot-pulsar-plugin), built against Pinot 0.11.0's SPI: the local stack.
RTCA_CONSUMER_FACTORY = "io.rtca.pinot.pulsar.PulsarConsumerFactory"
#: The plugin that ships inside Pinot 1.x distributions and images (`plugins/pinot-stream-ingestion/pinot-pulsar`).
PINOT_CONSUMER_FACTORY = "org.apache.pinot.plugin.stream.pulsar.PulsarConsumerFactory"

#: Default stream plugin class per backend. rtca's plugin implements the 0.11 SPI only, so it cannot load in a
#: Pinot 1.x cluster; an external cluster that does run it says so with RTCA_PINOT__CONSUMER_FACTORY.
CONSUMER_FACTORY: dict[Backend, str] = {
    "local": RTCA_CONSUMER_FACTORY,
    "docker": PINOT_CONSUMER_FACTORY,
    "external": PINOT_CONSUMER_FACTORY,
}

FunctionCode = Literal["virtualenv", "package"]

#: Name of the uploaded functions package: Pulsar's Python runtime unpacks `NAME.zip` and puts `NAME/src` first
#: on `sys.path` (instances/python-instance/python_instance_main.py), so the zip's top folder must equal its stem.
PACKAGE_NAME = "rtca-functions"


@dataclass(frozen=True)
class BackendProfile:
    backend: Backend
    #: `stream.pulsar.consumer.factory.class.name` of every REALTIME table.
    consumer_factory: str
    #: Partitions of the typed and derived topics (1 = non-partitioned topics, auto-created by the broker).
    topic_partitions: int
    #: Pinot `replication` / `replicasPerPartition` of every table.
    pinot_replication: int
    #: `parallelism` of every Pulsar Function.
    function_parallelism: int
    #: `virtualenv`: the worker's Python imports `rtca` from the project's virtualenv (only the function module is
    #: uploaded); `package`: the worker has no `rtca`, so `build_function_package` is uploaded as the function code.
    function_code: FunctionCode
    #: Whether `rtca up` / `rtca down` start and stop the services (False: someone else runs the cluster).
    manages_services: bool


_DEFAULTS: dict[Backend, BackendProfile] = {
    "local": BackendProfile("local", RTCA_CONSUMER_FACTORY, 1, 1, 1, "virtualenv", True),
    "docker": BackendProfile("docker", PINOT_CONSUMER_FACTORY, 1, 1, 1, "package", True),
    "external": BackendProfile("external", PINOT_CONSUMER_FACTORY, 1, 1, 1, "package", False),
}


def profile(settings: Settings) -> BackendProfile:
    """The backend's defaults with the explicit settings (`scale.*`, `pinot.consumer_factory`) applied."""
    base = _DEFAULTS[settings.backend]
    scale = settings.scale
    return BackendProfile(
        backend=base.backend,
        consumer_factory=settings.pinot.consumer_factory or base.consumer_factory,
        topic_partitions=scale.topic_partitions or base.topic_partitions,
        pinot_replication=scale.pinot_replication or base.pinot_replication,
        function_parallelism=scale.function_parallelism or base.function_parallelism,
        function_code=base.function_code,
        manages_services=base.manages_services,
    )


# --- Pinot table configs ------------------------------------------------------------------------------------------
def stream_connection_configs(settings: Settings) -> dict[str, str]:
    """`streamConfigs` keys for a secured Pulsar (same names in rtca's plugin and Pinot's): the token, if any.

    The token is stored in the table config (Pinot's plugins read it from there): give Pinot a token whose role
    may only consume the workbench's namespace.
    """
    token = settings.pulsar.auth_token
    return {"stream.pulsar.authenticationToken": token.get_secret_value()} if token else {}


def segments_replication(settings: Settings) -> dict[str, str]:
    """`segmentsConfig` replication keys valid on both Pinot lines: 0.11 reads `replicasPerPartition` for REALTIME
    tables, 1.x reads `replication` (and still accepts the other)."""
    replicas = str(profile(settings).pinot_replication)
    return {"replication": replicas, "replicasPerPartition": replicas}


# --- function code ----------------------------------------------------------------------------------------------
def _package_sources() -> Path:
    import rtca

    return Path(rtca.__file__).resolve().parent


def _package_members(root: Path) -> list[tuple[str, Path]]:
    """(path inside the package, file) for every module of `rtca`; data files (captures) and caches stay out."""
    members = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts or not path.is_file():
            continue
        if path.suffix == ".py" or path.name == "py.typed":
            members.append((relative.as_posix(), path))
    return members


def build_function_package(settings: Settings, *, wheels: Iterable[Path] = (), dest: Path | None = None) -> Path:
    """Zip `rtca` in the layout Pulsar's Python runtime installs from a `--py NAME.zip` (or the admin API's upload):

        rtca-functions/src/rtca/...        put first on sys.path by the function instance
        rtca-functions/deps/*.whl          optional: `pip install --no-index` by the instance before it starts

    Functions need `orjson` beside `pulsar-client`: the docker backend's Pulsar image has it (infra/docker/pulsar);
    for a cluster whose Python runtime lacks it, pass `wheels` built for that runtime's platform and Python, e.g.
    `pip download orjson==<pin> --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.12 -d W`.

    The archive is byte-for-byte reproducible (sorted members, fixed timestamps), so its hash can fingerprint a
    deployment. Returns `<run>/packages/rtca-functions.zip` (or `dest/rtca-functions.zip`); upload it under that
    file name, since the instance finds `src/` by the uploaded file's name.
    """
    out_dir = dest or settings.run_dir / "packages"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE_NAME}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in _package_members(_package_sources()):
            _add(archive, f"{PACKAGE_NAME}/src/rtca/{name}", path.read_bytes())
        for wheel in sorted(Path(w) for w in wheels):
            if wheel.suffix != ".whl" or not wheel.is_file():
                raise ConfigError(f"not a wheel file: {wheel}", hint="pass the .whl files `pip download` wrote")
            _add(archive, f"{PACKAGE_NAME}/deps/{wheel.name}", wheel.read_bytes())
    # Write beside the target and rename: a concurrent deploy never uploads a half-written zip.
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{PACKAGE_NAME}-", suffix=".zip")
    with os.fdopen(fd, "wb") as out:
        out.write(buffer.getvalue())
    os.replace(tmp, target)
    return target


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)
