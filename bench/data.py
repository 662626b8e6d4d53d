"""Benchmark inputs: 1000 purchase events with full customer data, new customers every run."""

from __future__ import annotations

import random
import time
from typing import Any

FIRST = ["Jane", "John", "Amélie", "Zoë", "Mateo", "Aiko", "Olu", "Valéry", "Søren", "Priya"]
LAST = ["Doe", "Smith", "O'Brien", "García", "Müller", "Tanaka", "Nguyen", "Kowalski", "Dubois", "Rossi"]
CITIES = [("Menlo Park", "CA"), ("New York", "NY"), ("Austin", "TX"), ("Seattle", "WA"), ("Miami", "FL")]
UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)


def customers(n: int, seed: int) -> list[dict[str, Any]]:
    """Raw customer records; the seed makes every run's customers new (no cache answers)."""
    rng = random.Random(seed)
    now = int(time.time())
    out = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, state = rng.choice(CITIES)
        uid = f"u{seed}-{i}-{rng.randrange(10**9)}"
        out.append(
            {
                "uid": uid,
                "email": f"{first}.{last}.{seed}.{i}@Example.com".replace("'", ""),
                "phone": f"({rng.randrange(201, 989)}) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
                "first": first,
                "last": last,
                "city": city,
                "state": state,
                "zip": f"{rng.randrange(10000, 99999)}",
                "country": "US",
                "ip": f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                "fbp": f"fb.1.{now * 1000 - rng.randrange(10**8)}.{rng.randrange(10**9)}",
                "fbc": f"fb.1.{now * 1000 - rng.randrange(10**8)}.IwAR{rng.randrange(10**12)}",
                "order": f"ORDER-{seed}-{i}",
                "time": now - rng.randrange(3600),
                "items": [
                    (f"SKU-{rng.randrange(10**6)}", rng.randrange(1, 4), round(rng.uniform(5, 100), 2))
                    for _ in range(3)
                ],
            }
        )
    return out


def ga4_event(c: dict[str, Any]) -> dict[str, Any]:
    """What an sGTM HTTP tag sends capi for one purchase."""
    return {
        "event_name": "purchase",
        "event_id": c["order"],
        "event_time": c["time"],
        "page_location": "https://shop.example.com/checkout/thanks",
        "user_agent": UA,
        "ip_override": c["ip"],
        "x-fb-ck-fbp": c["fbp"],
        "x-fb-ck-fbc": c["fbc"],
        "user_id": c["uid"],
        "value": round(sum(q * p for _, q, p in c["items"]), 2),
        "currency": "USD",
        "transaction_id": c["order"],
        "items": [{"item_id": i, "quantity": q, "price": p} for i, q, p in c["items"]],
        "user_data": {
            "email_address": c["email"],
            "phone_number": c["phone"],
            "address": {
                "first_name": c["first"],
                "last_name": c["last"],
                "city": c["city"],
                "region": c["state"],
                "postal_code": c["zip"],
                "country": c["country"],
            },
        },
    }
