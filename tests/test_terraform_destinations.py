"""The Terraform module's several pixels (docs/destinations.md, docs/terraform.md "Several pixels"),
parsed with python-hcl2 like tests/test_terraform.py: `var.destinations`, one token secret per
destination, META_DESTINATIONS rendered with their names, exactly one of pixel_id and
destinations."""

from __future__ import annotations

import json
from typing import Any

from capi.config import load_config
from tests.test_terraform import TF, load, one, resources


def _variables() -> dict[str, Any]:
    return {k: v for block in load(TF / "variables.tf")["variable"] for k, v in block.items()}


def test_destinations_variable_is_validated_and_pixel_id_optional() -> None:
    variables = _variables()
    destinations = variables["destinations"]
    assert destinations["default"] == []
    messages = " ".join(v["error_message"] for v in destinations["validation"])
    for rule in ("unique", "digits", "host", "token_secret_version", "lowercase"):
        assert rule in messages, rule
    assert variables["pixel_id"]["default"] is None
    assert "var.pixel_id == null" in one(variables["pixel_id"]["validation"])["condition"]


def test_exactly_one_of_pixel_id_and_destinations() -> None:
    preconditions = one(resources("google_cloudfunctions2_function")["events"]["lifecycle"])["precondition"]
    conditions = [p["condition"] for p in preconditions]
    assert any("var.pixel_id != null" in c and "length(var.destinations) > 0" in c for c in conditions)


def test_each_destination_has_its_own_token_secret_and_accessor() -> None:
    local = load(TF / "main.tf")["locals"][0]
    assert "token-${d.name}" in local["destination_secrets"] and "local.destination_secrets" in local["secrets"]
    assert "app-secret-${d.name}" in local["destination_secrets"] and "if d.app_secret" in local["destination_secrets"]
    # The single-pixel token secret only without destinations.
    assert "local.several ? {} : {meta_token" in local["secrets"]
    # One accessor binding per secret the module creates, destination tokens included.
    accessors = resources("google_secret_manager_secret_iam_member")
    assert accessors["runtime_access"]["for_each"] == "${google_secret_manager_secret.capi}"
    assert "META_DESTINATIONS = local.destinations_json" in local["environment"]
    assert "access_token_secret" in local["destinations_json"]
    outputs = {k: v for block in load(TF / "outputs.tf")["output"] for k, v in block.items()}
    assert "token-${d.name}" in outputs["destination_token_secrets"]["value"]


def test_two_pixel_example_renders_a_configuration_capi_accepts() -> None:
    example = load(TF / "examples/basic/two-pixels.tfvars.example")
    assert "pixel_id" not in example and len(example["destinations"]) == 2
    # What main.tf's destinations_json renders for it (secret names as the module makes them).
    project = example["project_id"]
    rendered = [
        {
            "name": d["name"],
            "pixel_id": d["pixel_id"],
            "access_token_secret": f"projects/{project}/secrets/capi-meta-token-{d['name']}/versions/latest",
            **{k: d[k] for k in ("hosts", "forward_events", "test_event_code") if k in d},
        }
        for d in example["destinations"]
    ]
    config = load_config({"META_DESTINATIONS": json.dumps(rendered)})
    shop, agency = config.destinations
    assert shop.hosts == ("shop.example.com", "*.shop.example.com") and agency.hosts == ()
    assert agency.forward_events == {"purchase", "generate_lead"}
