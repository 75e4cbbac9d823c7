"""Superset's SECRET_KEY and admin password: from the environment, or generated once and kept 0600 on disk.

No default secret ships with the project; the generated ones live in `<run>/secrets/superset.json`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from rtca.errors import ConfigError
from rtca.settings import Settings


@dataclass(frozen=True)
class SupersetSecrets:
    secret_key: str
    admin_password: str

    def __repr__(self) -> str:  # never let a secret reach a log through repr()
        return "SupersetSecrets(secret_key=***, admin_password=***)"


def superset_secrets(settings: Settings, *, kept: bool = True) -> SupersetSecrets:
    """Explicit settings (RTCA_SUPERSET__*) or SUPERSET_SECRET_KEY / SUPERSET_ADMIN_PASSWORD win over the file.

    The file records what Superset was first set up with: a value is written once (generated, or the environment's
    on the first run) and never replaced, so one run with a mistyped variable cannot lose the stored password or
    the key Superset encrypts its database credentials with. A Superset rtca did not set up (`kept=False`) was not
    set up with anything rtca knows: its password is never read from the file nor stored, where an unchecked (or
    rejected) one would later pass for configured."""
    path = settings.secrets_dir / "superset.json"
    stored = _stored(path) if kept and path.exists() else {}
    configured = settings.superset
    values = {
        "secret_key": (configured.secret_key.get_secret_value() if configured.secret_key else None)
        or os.environ.get("SUPERSET_SECRET_KEY") or stored.get("secret_key") or secrets.token_urlsafe(48),
        "admin_password": (configured.admin_password.get_secret_value() if configured.admin_password else None)
        or os.environ.get("SUPERSET_ADMIN_PASSWORD") or stored.get("admin_password")
        or secrets.token_urlsafe(12),
    }
    first = {key: stored.get(key) or value for key, value in values.items()}
    if kept and first != stored:
        settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # written beside it and renamed over it: a crash or a full disk half-way cannot lose the stored key
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(first, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(partial, 0o600)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return SupersetSecrets(**values)


def _stored(path: Path) -> dict[str, str]:
    try:
        stored = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        stored = None
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        raise ConfigError(f"{path} is not the JSON object of secrets rtca writes",
                          hint="restore it from a backup; if Superset was never started with it, delete it (new "
                               "secrets are generated), else Superset's stored credentials cannot be decrypted")
    return stored
