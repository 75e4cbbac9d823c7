"""Everything the local backend runs, resolved from the package registries into a user cache.

Maven Central gives Pulsar's server distribution and Pinot's jars, Maven builds our Pinot plugin, PyPI gives
Superset's own virtualenv, the machine's C compiler builds the loopback bind shim. Results live under
`settings.cache_dir` (by default `~/.cache/rtca`), so a second clone or a CI run on the same machine reuses them;
each step is skipped when its marker file is there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from rtca.errors import ArtifactError, ConfigError, PrerequisiteError
from rtca.settings import Settings
from rtca.stack.process import held_lock
from rtca.stack.progress import say, step

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_DONE = ".complete"


def require_tool(name: str, hint: str) -> str:
    """Path of a command on PATH, or a PrerequisiteError that says how to get it."""
    path = shutil.which(name)
    if path is None:
        raise PrerequisiteError(f"'{name}' was not found on PATH", hint=hint)
    return path


def require_java() -> str:
    """The `java` the stack runs: `$JAVA_HOME/bin/java` when JAVA_HOME is set (Pulsar's launcher and Maven use
    that one, so the version checked is the version run), else the first on PATH; Java 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = str(Path(home) / "bin" / "java")
        if not os.access(java, os.X_OK):
            raise PrerequisiteError(f"JAVA_HOME is {home}, which has no bin/java",
                                    hint="point JAVA_HOME at a Java 17 JDK, or unset it to use the java on PATH")
        where = f"JAVA_HOME ({home})"
    else:
        java = require_tool("java", "install a Java 17 JDK (Debian: apt-get install openjdk-17-jdk-headless)")
        where = f"PATH ({java})"
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    major = _java_major(out)
    if major is not None and major < 17:
        raise PrerequisiteError(f"Java 17 or newer is needed, found {out.splitlines()[0]} from {where}",
                                hint="install a Java 17 JDK and set JAVA_HOME to it (or put it first on PATH)")
    return java


def _java_major(version_output: str) -> int | None:
    for token in version_output.replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and ("." in token or token.isdigit()):
            major = int(head)
            return int(token.split(".")[1]) if major == 1 else major
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Seconds between the "still ..." lines of a long download or build.
HEARTBEAT_S = 10.0


def _run_logged(argv: list[str], *, log: Path, doing: str) -> tuple[int, str]:
    """Run `argv` with its output appended to `log`, saying every `HEARTBEAT_S` that it is still `doing`; returns
    the exit code and what it wrote (to name the cause of a failure). Interrupted (Ctrl-C, SIGTERM), it stops the
    child too: a download left running would write into folders the next start rebuilds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a+b") as out:  # read back through this handle: the log may be moved or deleted meanwhile
        start = out.tell()
        began = time.monotonic()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    code = process.wait(timeout=HEARTBEAT_S)
                    break
                except subprocess.TimeoutExpired:
                    say(f"  still {doing} ({time.monotonic() - began:.0f} s; log: {log})")
        except BaseException:
            process.kill()
            process.wait()
            raise
        out.seek(start)
        return code, out.read().decode("utf-8", "replace")


#: Lines of Maven's output that name why a download failed (offline, the first [ERROR] is only a consequence,
#: e.g. "No plugin found for prefix 'dependency'", and the network's refusal is a [WARNING]).
_NETWORK = re.compile(r"Could not transfer|UnknownHost|Connection refused|Connect timed out|Network is unreachable|"
                      r"No route to host|PKIX path")


def _maven(settings: Settings, args: list[str], *, what: str, doing: str) -> None:
    mvn = require_tool("mvn", "install Apache Maven 3.8+ (Debian: apt-get install maven)")
    log = settings.logs_dir / "artifacts.log"
    # Java takes user.home from the account, not from $HOME: a HOME pointed elsewhere (a container, a CI job) would
    # still read the account's ~/.m2 settings and repository. With user.home = $HOME, Maven's own configuration
    # there (settings.xml's localRepository) still applies; RTCA_MAVEN_REPO overrides it.
    options = ["-B", "--no-transfer-progress", "-Dstyle.color=never", f"-Duser.home={Path.home()}"]
    if settings.maven_repo is not None:
        options.append(f"-Dmaven.repo.local={settings.maven_repo}")
    code, output = _run_logged([mvn, *options, *args], log=log, doing=doing)
    if code != 0:
        lines = [_ANSI.sub("", line).strip() for line in output.splitlines()]
        network = [line for line in lines if _NETWORK.search(line)]
        errors = [line for line in lines if line.startswith("[ERROR]") and line[7:].strip()]
        cause = f": {(network or errors)[0][:300]}" if network or errors else ""
        repository = settings.maven_repo or "Maven's local repository (under $HOME/.m2)"
        raise ArtifactError(f"Maven failed to {what} (exit {code}){cause}; see {log}",
                            hint=f"check that Maven Central is reachable, the disk has room and {repository} is "
                                 "writable (RTCA_MAVEN_REPO moves it)")


def _marked(directory: Path) -> bool:
    return (directory / _DONE).exists()


def _mark(directory: Path) -> None:
    (directory / _DONE).touch()


def pulsar_home(settings: Settings) -> Path:
    """The unpacked Pulsar server distribution (downloaded once, about 245 MB)."""
    version = settings.pulsar.version
    root = settings.cache_dir / "pulsar"
    home = root / f"apache-pulsar-{version}"
    if _marked(home):
        return home
    download = root / "download"
    with step(f"downloading Pulsar {version} server distribution from Maven Central (about 245 MB)"):
        _maven(settings, [f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                          f"-Dartifact=org.apache.pulsar:pulsar-server-distribution:{version}:tar.gz:bin",
                          f"-DoutputDirectory={download}"],
               what=f"download Pulsar {version}", doing="downloading Pulsar")
    tarball = download / f"pulsar-server-distribution-{version}-bin.tar.gz"
    with step(f"unpacking {tarball.name}"):
        shutil.rmtree(home, ignore_errors=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(root, filter="tar")
        tarball.unlink()
    if not (home / "bin" / "pulsar").exists():
        raise ArtifactError(f"the Pulsar distribution did not unpack to {home}")
    _mark(home)
    return home


def pinot_lib(settings: Settings) -> Path:
    """A folder with Pinot's server-side jars (about 320 jars, 200 MB) resolved through `infra/stack`."""
    version = settings.pinot.version
    lib = settings.cache_dir / f"pinot-{version}" / "lib"
    if _marked(lib):
        return lib
    with step(f"resolving Apache Pinot {version} jars from Maven Central (about 200 MB)"):
        shutil.rmtree(lib, ignore_errors=True)
        _maven(settings, ["-f", str(settings.infra_dir / "stack" / "pinot-runtime.pom.xml"),
                          f"-Dpinot.version={version}", f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                          f"-DoutputDirectory={lib}"],
               what=f"resolve Pinot {version}", doing="resolving Pinot's jars")
    _mark(lib)
    return lib


def plugin_lib(settings: Settings) -> Path:
    """Build our Pinot stream plugin for Pulsar; returns a folder with its jar and runtime dependencies.

    The jars are copied out of Maven's `target/` into the cache under a digest of the module's sources, so a
    rebuild never swaps a jar under a running Pinot, and a changed source (a `git pull`) gets a new build.
    """
    module = settings.infra_dir / "pinot-pulsar-plugin"
    sources = sorted(p for p in (module / "src" / "main").rglob("*") if p.is_file()) + [module / "pom.xml"]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.relative_to(module).as_posix().encode() + b"\0" + path.read_bytes())
    out = settings.cache_dir / "pinot-pulsar-plugin" / digest.hexdigest()[:12]
    if _marked(out):
        return out
    built = module / "target" / "plugin-lib"
    with step("building the Pinot stream plugin for Pulsar (Maven)"):
        shutil.rmtree(built, ignore_errors=True)  # `package` adds to it: an earlier build's jars would come too
        _maven(settings, ["-f", str(module / "pom.xml"), "-DskipTests", "package"],
               what="build the Pinot Pulsar plugin", doing="building the plugin")
    jars = list(built.glob("*.jar"))
    if not jars:
        raise ArtifactError(f"the plugin build produced no jars in {built}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for jar in jars:
        shutil.copy2(jar, out / jar.name)
    _mark(out)
    return out


def _requirements_digest(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]


def superset_venv(settings: Settings) -> Path:
    """Superset's own virtualenv (its pins clash with the notebook stack), keyed by its requirements file."""
    requirements = settings.infra_dir / "superset" / "requirements.txt"
    pinned = re.search(r"^apache-superset==(\S+)", requirements.read_text(), flags=re.MULTILINE)
    if pinned is None or pinned.group(1) != settings.superset.version:  # the version is the file's to choose
        raise ConfigError(f"Superset {settings.superset.version} is configured but {requirements} pins "
                          f"{'apache-superset==' + pinned.group(1) if pinned else 'no apache-superset'}",
                          hint="change the pins in that file (with its dependencies), and RTCA_SUPERSET__VERSION "
                               "to match (it names Superset's initialisation marker and the docker image)")
    venv = settings.cache_dir / "venvs" / f"superset-{_requirements_digest(requirements)}"
    if _marked(venv):
        return venv
    with step(f"installing Superset into its own virtualenv {venv} (first time: about 2 minutes)"):
        shutil.rmtree(venv, ignore_errors=True)
        log = settings.logs_dir / "artifacts.log"
        for argv in ([sys.executable, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "pip"), "install", "--progress-bar", "off", "pip==26.3"],
                     [str(venv / "bin" / "pip"), "install", "--progress-bar", "off", "-r", str(requirements)]):
            code, output = _run_logged(argv, log=log, doing="installing Superset")
            if code != 0:
                errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
                cause = f" ({errors[0][:300]})" if errors else ""
                raise ArtifactError(f"installing Superset failed at: {' '.join(argv)}{cause}; see {log}",
                                    hint="check that PyPI (or your pip index) is reachable and the disk has room")
    _mark(venv)
    return venv


_shim_warned = False


def bind_shim(settings: Settings) -> Path | None:
    """The LD_PRELOAD library that moves wildcard listeners to the configured host (`infra/bindshim/`).

    Pinot 0.11, Pulsar standalone's bookie and Pulsar's Python function instances bind some listeners to every
    interface with no setting to change it; the shim rewrites those binds (see its source). Built once per source
    digest with the machine's `gcc`; without one the stack runs unchanged, after a warning.
    """
    global _shim_warned
    source = settings.infra_dir / "bindshim" / "loopbackbind.c"
    out = settings.cache_dir / "bindshim" / hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    library = out / "libloopbackbind.so"
    if _marked(out):
        return library
    gcc = shutil.which("gcc")
    if gcc is None:
        if not _shim_warned:
            say("- warning: 'gcc' was not found on PATH, so the loopback bind shim (infra/bindshim) is not built: "
                "Pinot's listeners, Pulsar's bookie and function instances' ports stay on all interfaces "
                "(Debian: apt-get install gcc, then restart the stack)")
            _shim_warned = True
        return None
    with step("building the loopback bind shim (gcc)"):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        result = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise ArtifactError(f"gcc could not build {source}: {result.stderr.strip()[-500:]}")
    _mark(out)
    return library


def bind_env(settings: Settings, host: str) -> dict[str, str]:
    """Environment that keeps a process's wildcard listeners on `host` (empty without the shim or for a wildcard).

    `host` is resolved to an IP literal here (the shim reads only literals), IPv4 first: a dual-stack listener moved
    to ::1 would refuse the IPv4 clients that a name like `localhost` also resolves to. Children inherit both.
    """
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        address = ""
        for family in (socket.AF_INET, socket.AF_UNSPEC):
            try:
                address = str(socket.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)[0][4][0])
                break
            except (OSError, IndexError):
                continue
        if not address:
            return {}
    if ipaddress.ip_address(address).is_unspecified:
        return {}
    library = bind_shim(settings)
    if library is None:
        return {}
    preload = " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD", "")]))
    return {"LD_PRELOAD": preload, "RTCA_BIND_HOST": address}


def ensure_all(settings: Settings) -> None:
    """Download and build whatever the local backend runs; each part is a no-op once cached. One at a time per
    cache: two stacks started at once (another run directory, the start-up benchmark's) share it, and the plugin's
    build folder besides."""
    require_java()
    with held_lock(settings.cache_dir / ".lock",
                   waiting=f"another rtca command is filling the cache {settings.cache_dir}; waiting for it ..."):
        pulsar_home(settings)
        pinot_lib(settings)
        plugin_lib(settings)
        superset_venv(settings)
        bind_shim(settings)
