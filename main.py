"""Cloud Functions entry points: `capi_events` (forward events), `capi_replay` (dead letters),
`capi_quality` (Meta's Event Match Quality, daily) and `capi_deliver` (the queue's consumer,
DELIVERY=queue).

Thin on purpose: the configuration is loaded once per instance, here at start-up, and every
request is handed to `capi.app.Application`.
"""

import flask
import functions_framework

from capi import server, shutdown
from capi.app import application_from_env, exit_on_config_error, tune_gc
from capi.http import MAX_BODY_BYTES, MAX_JOB_BODY_BYTES, EarlyRefusal

app = exit_on_config_error(application_from_env)


def refuse_early(flask_app: flask.Flask) -> None:
    """Answer 413 (too long) and 401 (no valid key) before functions-framework reads the body.

    functions-framework imports this module inside its Flask app's context and names the app
    after the target (`flask.Flask(target, ...)` in `create_app`): only `capi_events` checks
    ingest keys and takes 1 MiB; the jobs are IAM-only and take no body (16 KiB at most).
    """
    events = flask_app.name == "capi_events"
    flask_app.wsgi_app = EarlyRefusal(
        flask_app.wsgi_app,
        check_key=app.authenticator.check if events else None,
        project=app.config.project,
        max_bytes=MAX_BODY_BYTES if events else MAX_JOB_BODY_BYTES,
        read_first=not events,
    )


if flask.has_app_context():
    refuse_early(flask.current_app._get_current_object())  # type: ignore[attr-defined]
server.install()  # gunicorn's request line, header and slow-client bounds (capi/server.py)
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


@functions_framework.http
def capi_deliver(request: flask.Request) -> flask.Response:
    """Pub/Sub push (OIDC): deliver queued events in batches; 2xx acks, anything else nacks."""
    return app.deliver(request)
