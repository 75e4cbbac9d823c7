"""A logged-in session with Superset's REST API.

Writes need the JWT from `/security/login`, a CSRF token fetched with the same session (cookie) and a Referer;
one `httpx.Client` keeps all three together.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Mapping
from typing import Any

import httpx
import yaml

from rtca.errors import DeployError
from rtca.settings import Settings


class SupersetClient:
    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 60.0,
                 verify: Any = True) -> None:
        # Accept: JSON, or Superset answers a failed command (an import that does not validate) with its HTML
        # error page and status 500 rather than the JSON errors and 422 (`*/*` counts as accepting text/html)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, verify=verify,
                                  headers={"Referer": base_url, "Accept": "application/json"})
        token = self._login(username, password)
        self._http.headers["Authorization"] = f"Bearer {token}"
        csrf = self._check(self._http.get("/api/v1/security/csrf_token/"), "fetch a CSRF token")["result"]
        self._http.headers["X-CSRFToken"] = csrf

    @classmethod
    def from_settings(cls, settings: Settings) -> SupersetClient:
        from rtca.stack.profiles import profile  # rtca.stack imports this module: its modules are imported here
        from rtca.stack.remote import http_options, require_superset_password
        from rtca.stack.secrets import superset_secrets

        # A Superset rtca did not start has the password it was set up with: generating (and storing) one here
        # would only fail the login, and make the next `rtca deploy` believe the password is configured.
        require_superset_password(settings)
        secrets = superset_secrets(settings, kept=profile(settings).manages_services)
        return cls(settings.superset.url, settings.superset.admin_user, secrets.admin_password,
                   verify=http_options(settings, "superset")["verify"])

    def _login(self, username: str, password: str) -> str:
        payload = {"username": username, "password": password, "provider": "db", "refresh": True}
        response = self._http.post("/api/v1/security/login", json=payload)
        if response.status_code == 401:
            raise DeployError(f"Superset at {self._http.base_url} rejected user {username!r} and its password",
                              hint="the password is RTCA_SUPERSET__ADMIN_PASSWORD, else SUPERSET_ADMIN_PASSWORD, else "
                                   "the one in <run dir>/secrets/superset.json: it must be the one Superset's admin "
                                   "was created with (on its first start)")
        return str(self._check(response, "log in")["access_token"])

    @staticmethod
    def _check(response: httpx.Response, what: str) -> Any:
        if not response.is_success:
            raise DeployError(f"Superset could not {what}: HTTP {response.status_code} {_reason(response)}")
        try:
            return response.json()
        except ValueError:
            raise DeployError(f"Superset could not {what}: HTTP {response.status_code} but not JSON "
                              f"({response.headers.get('content-type')}): is {response.url.host}:"
                              f"{response.url.port} Superset?") from None

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self._http.get(path, params=params or None), f"GET {path}")

    def post(self, path: str, payload: Mapping[str, Any]) -> Any:
        return self._check(self._http.post(path, json=dict(payload)), f"POST {path}")

    def put(self, path: str, payload: Mapping[str, Any]) -> Any:
        return self._check(self._http.put(path, json=dict(payload)), f"PUT {path}")

    def delete(self, path: str) -> Any:
        return self._check(self._http.delete(path), f"DELETE {path}")

    def import_bundle(self, kind: str, files: Mapping[str, Mapping[str, Any]], *, passwords: Mapping[str, str] | None
                      = None) -> None:
        """Import an export-format bundle (`kind` = database, dataset, chart or dashboard), overwriting by uuid.

        `files` maps paths inside the bundle (e.g. `databases/Pinot.yaml`) to their YAML content.
        """
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            # metadata.yaml names the model class Superset checks against: charts are `Slice`, datasets `SqlaTable`.
            model = {"dataset": "SqlaTable", "chart": "Slice"}.get(kind, kind.capitalize())
            meta = {"version": "1.0.0", "type": model,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
            bundle.writestr("bundle/metadata.yaml", yaml.safe_dump(meta))
            for name, content in files.items():
                bundle.writestr(f"bundle/{name}", yaml.safe_dump(dict(content), sort_keys=False))
        form: dict[str, str] = {"overwrite": "true"}
        if passwords:
            form["passwords"] = json.dumps(dict(passwords))
        response = self._http.post(f"/api/v1/{kind}/import/", data=form,
                                   files={"formData": ("bundle.zip", buffer.getvalue(), "application/zip")})
        self._check(response, f"import a {kind} bundle")

    def export_bundle(self, kind: str, ids: list[int]) -> dict[str, bytes]:
        """Export objects (`kind` = database, dataset, chart or dashboard) with everything they use, as Superset's
        export zip: path inside the zip (root folder included) -> file content."""
        rison = "!(" + ",".join(str(int(i)) for i in ids) + ")"
        response = self._http.get(f"/api/v1/{kind}/export/", params={"q": rison})
        if not response.is_success:
            raise DeployError(f"Superset could not export {kind}s {ids}: HTTP {response.status_code} "
                              f"{response.text[:500]}")
        with zipfile.ZipFile(io.BytesIO(response.content)) as bundle:
            return {name: bundle.read(name) for name in bundle.namelist()}

    def sql(self, database_id: int, sql: str) -> list[dict[str, Any]]:
        """Run SQL through SQL Lab (synchronously) and return the rows: proof that the database answers."""
        result = self.post("/api/v1/sqllab/execute/", {"database_id": database_id, "sql": sql, "runAsync": False,
                                                         "select_as_cta": False})
        return list(result.get("data", []))

    def database_id(self, name: str) -> int | None:
        found = self.get("/api/v1/database/", q=f"(filters:!((col:database_name,opr:eq,value:'{name}')))")
        return int(found["result"][0]["id"]) if found["result"] else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SupersetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(response: httpx.Response) -> str:
    """What an error response says: Superset's JSON message or errors, else the status phrase (a 500 is an HTML page
    that says nothing; the traceback is in Superset's log)."""
    try:
        body = response.json()
    except ValueError:
        hint = " (an error inside Superset: its log has the traceback)" if response.status_code >= 500 else ""
        return f"{response.reason_phrase}{hint}"
    if isinstance(body, dict):
        messages = [str(e.get("message")) for e in body.get("errors") or [] if isinstance(e, dict)]
        if body.get("message"):
            messages.insert(0, str(body["message"]))
        if messages:
            return "; ".join(messages)[:2000]
    return response.text[:500]
