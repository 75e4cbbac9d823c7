"""The `external` backend: Pulsar, Pinot and Superset run elsewhere (your clusters or a managed service).

rtca starts and stops nothing here. `rtca up` checks that every configured URL answers with the configured
credentials and names each one that does not; `rtca deploy` then creates the namespace, functions, tables and
dashboards there (`prepare` first). Configure with RTCA_BACKEND=external and, for example:

    RTCA_PULSAR__SERVICE_URL_OVERRIDE=pulsar+ssl://pulsar.example.com:6651
    RTCA_PULSAR__ADMIN_URL_OVERRIDE=https://pulsar.example.com:8443   RTCA_PULSAR__AUTH_TOKEN=...
    RTCA_PINOT__CONTROLLER_URL_OVERRIDE=https://pinot-controller.example.com
    RTCA_PINOT__BROKER_URL_OVERRIDE=https://pinot-broker.example.com  RTCA_PINOT__USERNAME=... RTCA_PINOT__PASSWORD=...
    RTCA_SUPERSET__URL_OVERRIDE=https://superset.example.com          RTCA_SUPERSET__ADMIN_PASSWORD=...
    RTCA_TLS__CA_FILE=/path/to/ca.pem   (only for a private CA)
"""

from __future__ import annotations

from rtca.settings import Settings
from rtca.stack import remote
from rtca.stack.process import ServiceState
from rtca.stack.progress import say, step

#: What `rtca deploy` runs first on this backend (namespace policies, Superset's Pinot database).
prepare = remote.prepare


def up(settings: Settings) -> list[ServiceState]:
    """Check only: every URL answers (with auth); a ServiceError names each one that does not."""
    with step("checking the external cluster's URLs (nothing is started on this backend)"):
        return remote.require_healthy(settings)


def status(settings: Settings) -> list[ServiceState]:
    return remote.status(settings)


def down(settings: Settings, *, wipe: bool = False) -> list[str]:
    """Nothing to stop: rtca does not run these services. `wipe` does not delete remote data either."""
    say("external backend: nothing to stop (rtca does not run these clusters)"
        + ("; --wipe deletes nothing remote: remove the tables, functions and topics there yourself" if wipe else ""))
    return []
