"""`capi.http.outcome_status`: the one place a request's outcome becomes an HTTP status.

The table is docs/api.md "Response" (statuses): 200 when every destination took its
events, 202 when each either took or stored them, 502 when a destination refused permanently
and nothing was stored for it, 503 when something could be neither delivered nor stored.
"""

from __future__ import annotations

import pytest

from capi.http import outcome_status
from capi.service import Delivery, Failure, Outcome, _Batch


def delivery(*states: str, in_flight: int = 0) -> Delivery:
    result = Delivery(states=dict(enumerate(states)), in_flight=in_flight)
    result.failed = [Failure(i, f"e{i}", "refused", 100, 2804003) for i, s in enumerate(states) if s == "failed"]
    return result


@pytest.mark.parametrize(
    ("deliveries", "status"),
    [
        ([], 200),  # nothing to send (all skipped or rejected)
        ([delivery("forwarded", "forwarded")], 200),
        ([delivery("forwarded", "failed")], 200),  # one refused event next to a delivered one
        ([delivery("stored")], 202),
        ([delivery("forwarded", "stored", "failed")], 202),
        ([delivery("failed")], 502),
        ([delivery("failed", "failed")], 502),
        ([delivery("unsent")], 503),
        ([delivery("forwarded", "unsent")], 503),
        ([delivery(in_flight=1)], 503),
        # several destinations: the worst one decides
        ([delivery("forwarded"), delivery("stored")], 202),
        ([delivery("forwarded"), delivery("failed")], 502),
        ([delivery("stored"), delivery("failed")], 502),
        ([delivery("failed"), delivery("unsent")], 503),
    ],
)
def test_outcome_status(deliveries: list[Delivery], status: int) -> None:
    assert outcome_status(Outcome(_Batch(received=1), deliveries)) == status
