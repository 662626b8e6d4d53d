"""One error hierarchy for capi; `capi.http` maps it to HTTP responses in one place.

Every error carries a message that is safe to show a caller: never a token, a key or raw
personal data.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CapiError(Exception):
    """Root of every error capi raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        body.update(self.details)
        return body


class ConfigError(CapiError):
    """Bad or missing configuration; raised at start-up, names the variable."""

    code = "config"


class RequestError(CapiError):
    """The request as a whole cannot be processed (not its individual events)."""

    status = 400
    code = "bad_request"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str = "POST", **details: Any) -> None:
        super().__init__(message, **details)
        self.allow = allow  # the `Allow` header: the methods the path does take


class NotFound(RequestError):
    status = 404
    code = "not_found"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class UnavailableError(CapiError):
    """A dependency we need is down; the caller should retry later."""

    status = 503
    code = "unavailable"


class SecretUnavailable(UnavailableError):
    """Secret Manager could not give us a secret (names the resource, never the value)."""

    code = "secret_unavailable"


class StoreUnavailable(UnavailableError):
    """Firestore could not store what we had to keep (dead letter, idempotency claim)."""

    code = "store_unavailable"


class QueueUnavailable(UnavailableError):
    """Pub/Sub did not take (or give) messages in time (DELIVERY=queue)."""

    code = "queue_unavailable"


class MetaError(CapiError):
    """Meta's Graph API did not accept a request, and what that means for its events.

    `kind` (docs/delivery.md#delivery-guarantees; docs/meta-capi.md §7):
    - `transient`: try later (retried, then stored for replay);
    - `config`: capi's configuration is wrong (token, permission, pixel); the events are fine
      and are stored until it is fixed;
    - `refused`: Meta refused the events themselves; a batch is split to find which;
    - `unreadable`: Meta's answer could not be read, so whether it took the events is unknown;
      they are stored (Meta deduplicates a second copy by event_id).
    `fix` says what to change for a `config` refusal.
    """

    status = 502
    code = "meta_refused"
    # Seconds Meta says a throttled app or pixel must wait (X-Business-Use-Case-Usage's
    # estimated_time_to_regain_access, else Retry-After); set by the Graph client.
    regain_after: float | None = None
    CODES: ClassVar[dict[str, str]] = {
        "transient": "meta_unavailable",
        "config": "meta_config",
        "refused": "meta_refused",
        "unreadable": "meta_unreadable",
    }

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        kind: str | None = None,
        http_status: int | None = None,
        meta_code: int | None = None,
        meta_subcode: int | None = None,
        fbtrace_id: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(
            message,
            meta_http_status=http_status,
            meta_code=meta_code,
            meta_subcode=meta_subcode,
            fbtrace_id=fbtrace_id,
        )
        self.kind = kind or ("transient" if transient else "refused")
        self.transient = self.kind == "transient"
        self.http_status = http_status
        self.meta_code = meta_code
        self.meta_subcode = meta_subcode
        self.fbtrace_id = fbtrace_id
        self.fix = fix
        self.code = self.CODES[self.kind]
        if self.kind != "refused":
            self.status = 503

    @property
    def kept(self) -> bool:
        """Whether the events are stored for replay rather than dropped."""
        return self.kind != "refused"


class MetaAuthError(MetaError):
    """Meta rejected the access token (OAuthException 190)."""


class TokenUnreadable(MetaError):
    """A destination's token (or app secret) could not be read from Secret Manager: nothing was
    sent, and the events are kept for replay as for a token Meta refused (`config`)."""

    def __init__(self, cause: SecretUnavailable) -> None:
        super().__init__(f"the token could not be read ({cause.message})", kind="config", fix=cause.details.get("fix"))
        self.code = cause.code  # secret_unavailable: the answer names what failed
