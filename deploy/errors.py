"""What a failed step says: DeployError, and the fix for the errors a first deploy meets."""

from __future__ import annotations

import re
from collections.abc import Sequence


class DeployError(Exception):
    """A step failed: what happened, and what to do about it."""

    def __init__(self, what: str, fix: str, output: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.output = output  # what the failed command printed


# An API enabled moments ago, or an account created moments ago, that has not reached every
# Google service yet: the same apply works a minute later.
NOT_READY = (
    r"SERVICE_DISABLED|has not been used in project|API has not been used|[Ss]ervice agent"
    r"|[Ss]ervice account .* does not exist"
)

# What a first deploy meets, recognised in gcloud's or Terraform's error text, most specific
# first. {project} is filled in. The texts are Google's error messages (their stable parts).
FIXES: Sequence[tuple[str, str]] = (
    (
        r"allowedPolicyMemberDomains|allowedPolicyMembers|do(es)? not belong to a permitted customer",
        "An organization policy (iam.allowedPolicyMemberDomains, or iam.managed.allowedPolicyMembers) "
        "forbids allUsers, which the sGTM path needs: Google must let the tag's request through to "
        "capi's own ingest-key check. Ask an organization policy administrator to exempt this "
        "project, e.g. `gcloud org-policies reset iam.allowedPolicyMemberDomains --project={project}`, "
        "then run make deploy again.",
    ),
    (
        r"[Bb]illing (account )?(for project .* )?(is )?(not|disabled)|BILLING_DISABLED|billing must be enabled"
        r"|[Bb]illing to be enabled|billing account .* (closed|disabled)",
        "Billing is off for project {project}. Link a billing account (list yours with "
        "`gcloud billing accounts list`): `gcloud billing projects link {project} "
        "--billing-account=XXXXXX-XXXXXX-XXXXXX`, then run make deploy again.",
    ),
    (
        r"SERVICE_DISABLED|has not been used in project|it is disabled|API has not been used"
        r"|is not enabled for project|service .* is not enabled",
        "An API the deploy has just enabled is not ready yet (enabling takes a few minutes to "
        "reach every Google service). Wait two minutes and run make deploy again: it goes on "
        "where it stopped.",
    ),
    (
        r"PERMISSION_DENIED|[Pp]ermission denied|does not have (the )?(required )?permission"
        r"|[Pp]ermission '[\w.]+' denied|AUTH_PERMISSION_DENIED|Error 403|status code 403|\b403\b.*[Ff]orbidden",
        "Your account lacks a permission this step needs (the line above names it). Ask a "
        "project owner to grant you roles/owner on {project}, or the roles docs/deploy.md lists "
        "(Before you start): `gcloud projects add-iam-policy-binding {project} --member=user:YOU "
        "--role=ROLE`. Then run make deploy again.",
    ),
    (
        r"Error 409|[Aa]lready exists|ALREADY_EXISTS",
        "A resource with capi's name exists but is not in make deploy's Terraform state, and is not "
        "one it adopts by itself (docs/deploy.md, Upgrade). Import it (`terraform -chdir=deploy/terraform "
        "import -var=... ADDRESS ID`), delete it, or deploy beside it with another NAME=.",
    ),
    (
        r"does not match configured version constraint|[Ii]nconsistent dependency lock file",
        "The providers Terraform downloaded for an earlier version do not fit this one: run "
        "`terraform -chdir=deploy/terraform init -upgrade -backend=false`, then make deploy again.",
    ),
    (
        r"Error acquiring the state lock|state lock",
        "Another make deploy (or terraform) is running on this deployment's state; wait for it to "
        "finish. If none is, the lock is stale: `terraform -chdir=deploy/terraform force-unlock ID` "
        "with the ID printed above.",
    ),
    (
        r"You do not currently have an active account|gcloud auth login|Reauthentication required"
        r"|invalid_grant|credentials .* (invalid|expired)",
        "gcloud has no valid login: run `gcloud auth login`, then make deploy again.",
    ),
)


def diagnose(text: str, project: str) -> str:
    """The fix for an error text, or a pointer to the output when it is none of the known ones."""
    for pattern, fix in FIXES:
        if re.search(pattern, text):
            return fix.format(project=project)
    return "The output above says why. Fix it and run make deploy again: every step that is done is skipped."
