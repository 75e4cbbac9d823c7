"""Superset's configuration in rtca's docker backend (the local backend renders the same settings)."""

import os

SECRET_KEY = os.environ["SUPERSET_SECRET_KEY"]
SQLALCHEMY_DATABASE_URI = "sqlite:////app/superset_home/superset.db"
# A workbench on loopback: no HTTPS redirects, no rate limit on the API logins the tools make.
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
WTF_CSRF_TIME_LIMIT = None
SQLLAB_TIMEOUT = 120
SUPERSET_WEBSERVER_TIMEOUT = 120
FEATURE_FLAGS = {"DASHBOARD_NATIVE_FILTERS": True}
