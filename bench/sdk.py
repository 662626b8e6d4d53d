"""Meta's facebook-business SDK building and serializing the same 1000 events.

Run as a separate process (`python -m bench.sdk SEED...`): prints the process CPU seconds of
each build, so the SDK's imports and start-up are not counted against it.
"""

from __future__ import annotations

import json
import sys
import time

from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.content import Content
from facebook_business.adobjects.serverside.custom_data import CustomData
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData

from bench.data import UA, customers


def build(people: list[dict]) -> str:
    events = []
    for c in people:
        user = UserData(
            emails=[c["email"]],
            phones=[c["phone"]],
            first_names=[c["first"]],
            last_names=[c["last"]],
            cities=[c["city"]],
            states=[c["state"]],
            zip_codes=[c["zip"]],
            country_codes=[c["country"]],
            external_ids=[c["uid"]],
            client_ip_address=c["ip"],
            client_user_agent=UA,
            fbc=c["fbc"],
            fbp=c["fbp"],
        )
        contents = [Content(product_id=i, quantity=q, item_price=p) for i, q, p in c["items"]]
        custom = CustomData(
            value=round(sum(q * p for _, q, p in c["items"]), 2),
            currency="usd",
            order_id=c["order"],
            contents=contents,
            content_ids=[i for i, _, _ in c["items"]],
            content_type="product",
            num_items=sum(q for _, q, _ in c["items"]),
        )
        events.append(
            Event(
                event_name="Purchase",
                event_time=c["time"],
                event_id=c["order"],
                event_source_url="https://shop.example.com/checkout/thanks",
                action_source=ActionSource.WEBSITE,
                user_data=user,
                custom_data=custom,
            )
        )
    request = EventRequest(events=events, pixel_id="1234567890")
    return json.dumps(request.get_params())


def main() -> None:
    """Seeds from the command line, or one per line on stdin (to interleave with capi's runs).

    --no-build makes the inputs only: the baseline of an instruction-count difference.
    """
    run_build = "--no-build" not in sys.argv
    seeds = [s for s in sys.argv[1:] if s != "--no-build"] or (line.strip() for line in sys.stdin)
    for seed in seeds:
        people = customers(1000, int(seed))  # made before the clock starts: only the SDK's work is timed
        started = time.process_time()
        body = build(people) if run_build else ""
        elapsed = time.process_time() - started
        print(json.dumps({"seed": int(seed), "cpu": elapsed, "bytes": len(body)}), flush=True)


if __name__ == "__main__":
    main()
