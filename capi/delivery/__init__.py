"""Delivery to Meta: everything between a finished, hashed event and Meta's answer.

- `graph`: the Graph API client, its retry policy and the reading of Meta's answers;
- `split`: sending a batch so that one refused event never sinks the others (bisection);
- `deadletter`: events Meta could not take, kept in Firestore;
- `replay`: dead letters sent again (`capi_replay`).
- `throttle`: Meta's throttling codes and usage header, and the pixels paused meanwhile;
- DELIVERY=queue: `pubsub` (Pub/Sub's REST API), `publish` (the messages, published by
  `/events`), `batcher` (gathering concurrent pushes), `consume` (`capi_deliver`, the push
  consumer) and `drain` (the dead-letter topic, drained by `capi_replay`).

`capi.service` orchestrates these; nothing here knows about input dialects or HTTP requests.
"""

from capi.delivery.split import MAX_SPLIT_CALLS, SPLIT_SECONDS, Sender, Sent, log_config_refusal, send_split

__all__ = ["MAX_SPLIT_CALLS", "SPLIT_SECONDS", "Sender", "Sent", "log_config_refusal", "send_split"]
