"""Cloud Functions entry points: `capi_events` (forward events), `capi_replay` (dead letters)
and `capi_quality` (Meta's Event Match Quality, daily).

Thin on purpose: the configuration is loaded once per instance, here at start-up, and every
request is handed to `capi.app.Application`.
"""

import flask
import functions_framework

from capi import shutdown
from capi.app import application_from_env, exit_on_config_error, tune_gc

app = exit_on_config_error(application_from_env)
tune_gc()  # after start-up, so that what it loaded is frozen out of every collection
shutdown.install()  # SIGTERM: stop retrying, store what is in flight, answer (capi/shutdown.py)


@functions_framework.http
def capi_events(request: flask.Request) -> flask.Response:
    """POST / or /events: forward; POST /validate: dry run with the payload; GET /healthz."""
    return app.events(request)


@functions_framework.http
def capi_replay(request: flask.Request) -> flask.Response:
    """Re-send dead-lettered events still inside Meta's 7-day window (Cloud Scheduler, OIDC)."""
    return app.replay(request)


@functions_framework.http
def capi_quality(request: flask.Request) -> flask.Response:
    """Read Meta's Dataset Quality API for each destination; log EMQ per event name (Cloud Scheduler, OIDC)."""
    return app.quality(request)
