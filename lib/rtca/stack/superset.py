"""Apache Superset from its own virtualenv, with a SQLite metadata database under the run directory.

The first start initialises it (schema, admin user, roles) inside the same supervised process, before the web
server starts, so `rtca up` starts every service at once and waits on health checks only. Secrets reach Superset
through the environment, never through a file in the repository or an argument in a log.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import quote

from rtca.settings import Settings
from rtca.stack.artifacts import superset_venv
from rtca.stack.process import Launch, Service
from rtca.stack.progress import say
from rtca.stack.secrets import superset_secrets
from rtca.superset.client import SupersetClient

_CONFIG = '''\
"""Rendered by rtca.stack.superset for this run directory; edits are overwritten by `rtca up`."""
import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = "sqlite:///{db}"
# A workbench on loopback: no HTTPS redirects, no rate limit on the API logins the tools make.
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
WTF_CSRF_TIME_LIMIT = None
SQLLAB_TIMEOUT = 120
SUPERSET_WEBSERVER_TIMEOUT = 120
FEATURE_FLAGS = {{"DASHBOARD_NATIVE_FILTERS": True}}
'''


#: What Superset's importer takes for "the password given separately" (superset.constants.PASSWORD_MASK).
PASSWORD_MASK = "X" * 10


def pinot_sqlalchemy_uri(settings: Settings) -> str:
    """pinotdb's URI; with Pinot basic auth (RTCA_PINOT__USERNAME) it names the user and a masked password, which
    the import replaces with `pinot_passwords(...)` (pinotdb sends both to the broker and the controller)."""
    broker = settings.pinot.broker_url
    if settings.pinot.username:
        scheme, rest = broker.split("://", 1)
        broker = f"{scheme}://{quote(settings.pinot.username, safe='')}:{PASSWORD_MASK}@{rest}"
    return f"pinot+{broker}/query/sql?controller={settings.pinot.controller_url}/"


def pinot_passwords(settings: Settings, bundle_path: str) -> dict[str, str]:
    """The import API's `passwords` form field for the Pinot database file at `bundle_path` (empty without auth)."""
    password = settings.pinot.password
    return {bundle_path: password.get_secret_value()} if settings.pinot.username and password else {}


#: Seconds added to the start timeout for Superset's first start: migrating its database, creating the admin
#: user and roles took 4 to 5 minutes on a loaded 2-core machine.
FIRST_START_GRACE = 600.0


def service(settings: Settings) -> Service:
    s = settings.superset
    first = not _init_marker(settings).exists()
    return Service("superset", lambda: _launch(settings), url=s.url, health_url=f"{s.url}/health", ports=(s.port,),
                   start_timeout=settings.start_timeout + FIRST_START_GRACE if first else None, host=s.host)


def _init_marker(settings: Settings) -> Path:
    return settings.data_dir / "superset" / f".initialized-{settings.superset.version}"


def _launch(settings: Settings) -> Launch:
    venv = superset_venv(settings)
    s = settings.superset
    data = settings.data_dir / "superset"
    conf = settings.run_dir / "conf" / "superset_config.py"
    data.mkdir(parents=True, exist_ok=True)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(_CONFIG.format(db=data / "superset.db"))
    secrets = superset_secrets(settings)
    bin_dir = venv / "bin"
    marker = _init_marker(settings)
    if not marker.exists():
        say("  superset: first start, it sets up its database and admin user first (a few minutes)")
    # sh expands $SUPERSET_ADMIN_PASSWORD itself, so the password never appears in the logged command line.
    init = " && ".join([
        f"{bin_dir / 'superset'} db upgrade",
        f"{bin_dir / 'superset'} fab create-admin --username {shlex.quote(s.admin_user)} --firstname Admin"
        ' --lastname Workbench --email admin@localhost --password "$SUPERSET_ADMIN_PASSWORD"',
        f"{bin_dir / 'superset'} init",
        f"touch {shlex.quote(str(marker))}",
    ])
    serve = (f"exec {bin_dir / 'gunicorn'} --bind {s.host}:{s.port} --workers 1 --worker-class gthread"
             " --threads 8 --timeout 120 --access-logfile - 'superset.app:create_app()'")
    script = f"set -e; [ -f {shlex.quote(str(marker))} ] || {{ {init}; }}; {serve}"
    env = {
        "SUPERSET_CONFIG_PATH": str(conf),
        "SUPERSET_SECRET_KEY": secrets.secret_key,
        "SUPERSET_ADMIN_PASSWORD": secrets.admin_password,
        "FLASK_APP": "superset",
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SUPERSET_LOAD_EXAMPLES": "no",
        # Superset's DATA_DIR (~/.superset) and gunicorn's ~/.gunicorn: in the run directory, not the user's home
        "HOME": str(data / "home"),
    }
    return Launch(["/bin/sh", "-c", script], env=env, cwd=data)


def register_pinot(settings: Settings) -> None:
    """Register (or update) the Pinot database under a fixed uuid, so dashboard bundles can point at it."""
    s = settings.superset
    database = {
        "database_name": s.database_name,
        "sqlalchemy_uri": pinot_sqlalchemy_uri(settings),
        "cache_timeout": None,
        "expose_in_sqllab": True,
        "allow_run_async": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_dml": False,
        "allow_file_upload": False,
        "extra": {"allows_virtual_table_explore": True},
        "uuid": s.database_uuid,
        "version": "1.0.0",
    }
    with SupersetClient.from_settings(settings) as client:
        path = f"databases/{s.database_name}.yaml"
        client.import_bundle("database", {path: database}, passwords=pinot_passwords(settings, path))


def data_dirs(settings: Settings) -> list[Path]:
    return [settings.data_dir / "superset"]
