"""Superset's SECRET_KEY and admin password: from the environment, or generated once and kept 0600 on disk.

No default secret ships with the project; the generated ones live in `<run>/secrets/superset.json`.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass

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
    stored: dict[str, str] = json.loads(path.read_text()) if kept and path.exists() else {}
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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(first, out)
        os.chmod(path, 0o600)
    return SupersetSecrets(**values)
