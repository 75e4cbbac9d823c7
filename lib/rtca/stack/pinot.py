"""Apache Pinot as four local JVM processes: Zookeeper, controller, broker and server.

`StartServiceManager` (all in one JVM) fails in 0.11.0 with a NullPointerException, so each role runs alone
through `PinotAdministrator`. Our Pulsar stream plugin goes on the classpath of the controller (it builds the
partition metadata provider when a table is created) and of the server (it consumes); the broker needs nothing.
Every role runs under the loopback bind shim (`artifacts.bind_shim`): 0.11 has no setting for its listeners' host.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtca.settings import Settings
from rtca.stack.artifacts import bind_env, pinot_lib, plugin_lib, require_java
from rtca.stack.process import Launch, Service

MAIN_CLASS = "org.apache.pinot.tools.admin.PinotAdministrator"
#: Without these, Java 17 stops the controller at start (InaccessibleObjectException in jersey / JAXB).
JAVA17_OPENS = [
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in ("java.lang", "java.nio", "sun.nio.ch", "java.util", "java.lang.reflect",
                    "jdk.internal.misc", "java.util.concurrent", "java.io", "java.net")
]


def _jvm(settings: Settings, heap: str, role: str, *args: str, plugin: bool = False) -> Launch:
    classpath = f"{pinot_lib(settings)}{os.sep}*"
    if plugin:
        classpath += f"{os.pathsep}{plugin_lib(settings)}{os.sep}*"
    data = settings.data_dir / "pinot"
    data.mkdir(parents=True, exist_ok=True)
    # Each role writes a pid file into java.io.tmpdir at every start (`.pinotAdmin<Role>-<ms>.pid`, Zookeeper the
    # fixed `.zooKeeper.pid` two stacks on one host would share): kept in the run directory, wiped with it; and no
    # JVM perf file in /tmp (left behind by a JVM that is killed).
    tmp = data / "tmp"
    tmp.mkdir(exist_ok=True)
    log_config = settings.infra_dir / "stack" / "pinot-log4j2.xml"
    # UTC: Pinot renders TIMESTAMP results in the JVM's zone, and the notebooks and charts read them as UTC
    argv = [require_java(), *heap.split(), *settings.jvm_options.split(), *JAVA17_OPENS, "-Duser.timezone=UTC",
            f"-Djava.io.tmpdir={tmp}", "-XX:+PerfDisableSharedMem", f"-Dlog4j2.configurationFile={log_config}",
            "-cp", classpath, MAIN_CLASS, role, *args]
    # Zookeeper, the HTTP listeners and the server's Netty and gRPC ports bind to all interfaces in 0.11 with no
    # setting to change it: the bind shim moves them to the configured host.
    return Launch(argv=argv, env=bind_env(settings, settings.pinot.host), cwd=data)


def services(settings: Settings) -> list[Service]:
    """Zookeeper, then the controller, broker and server (these two after the controller on a first start)."""
    p = settings.pinot
    zk = p.zookeeper_address
    data = settings.data_dir / "pinot"
    cluster = ("-zkAddress", zk, "-clusterName", p.cluster)
    server_admin = f"http://{p.host}:{p.server_admin_port}"
    cluster_dep = ("pinot-zookeeper",) if cluster_marker(settings).exists() else ("pinot-controller",)
    return [
        Service("pinot-zookeeper", lambda: _jvm(settings, p.zookeeper_heap, "StartZookeeper", "-zkPort",
                                                str(p.zookeeper_port), "-dataDir", str(data / "zookeeper")),
                url=zk, ports=(p.zookeeper_port,), host=p.host),
        # The controller's first start sets up the Helix cluster in Zookeeper; broker and server fail at once
        # without it. Once it exists (kept in Zookeeper's data), they need only Zookeeper: a faster warm start.
        Service("pinot-controller", lambda: _jvm(settings, p.controller_heap, "StartController", *cluster,
                                                 "-controllerHost", p.host, "-controllerPort",
                                                 str(p.controller_port), "-dataDir", str(data / "controller"),
                                                 plugin=True),
                url=p.controller_url, health_url=f"{p.controller_url}/health", ports=(p.controller_port,),
                after=("pinot-zookeeper",), host=p.host),
        Service("pinot-broker", lambda: _jvm(settings, p.broker_heap, "StartBroker", *cluster,
                                             "-configFileName", str(broker_config(settings))),
                url=p.broker_url, health_url=f"{p.broker_url}/health", ports=(p.broker_port,),
                after=cluster_dep, host=p.host),
        Service("pinot-server", lambda: _jvm(settings, p.server_heap, "StartServer", *cluster,
                                             "-serverHost", p.host, "-serverPort", str(p.server_port),
                                             "-serverAdminPort", str(p.server_admin_port),
                                             "-serverGrpcPort", str(p.server_grpc_port),
                                             "-dataDir", str(data / "server" / "index"),
                                             "-segmentDir", str(data / "server" / "segments"), plugin=True),
                url=server_admin, health_url=f"{server_admin}/health",
                ports=(p.server_port, p.server_admin_port, p.server_grpc_port), after=cluster_dep, host=p.host),
    ]


#: Seconds the broker waits for queries in flight before it exits (Pinot's default, 10 s, was most of `rtca down`).
BROKER_SHUTDOWN_DELAY_MS = 1000


def broker_config(settings: Settings) -> Path:
    """The broker's configuration file. Only a file sets `pinot.broker.delayShutdownTimeMs`, and a file replaces
    StartBroker's own flags (host, query port), so it carries them too (the keys of 0.11's `generateBrokerConf`)."""
    p = settings.pinot
    path = settings.run_dir / "conf" / "pinot-broker.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"pinot.cluster.name={p.cluster}\n"
                    f"pinot.zk.server={p.zookeeper_address}\n"
                    f"pinot.broker.hostname={p.host}\n"
                    f"pinot.broker.client.queryPort={p.broker_port}\n"
                    f"pinot.broker.delayShutdownTimeMs={BROKER_SHUTDOWN_DELAY_MS}\n")
    return path


def cluster_marker(settings: Settings) -> Path:
    """Written once the controller has created the cluster in Zookeeper (removed with the data by --wipe)."""
    return settings.data_dir / "pinot" / ".cluster-ready"


def data_dirs(settings: Settings) -> list[Path]:
    return [settings.data_dir / "pinot"]
