"""Baselines for the benchmarks: a hello-world function and a trivial forwarder."""

import os

import functions_framework
import requests

_session = requests.Session()


@functions_framework.http
def hello(request):
    return "ok"


@functions_framework.http
def forwarder(request):
    """Posts the body to the Graph API unchanged: the least work a forwarder can do."""
    body = request.get_json()
    data = body.get("events", [body])
    response = _session.post(
        os.environ["GRAPH_URL"], json={"data": data, "access_token": os.environ["TOKEN"]}, timeout=5
    )
    return response.text, response.status_code, {"Content-Type": "application/json"}
