"""An event as ListEvents and UpdateBuildEvent show it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters import distelli
from adapters.base import rfc3339
from bridge.listing.delivery_view import NOTHING_SENT
from bridge.operations import stale
from bridge.storage.models import Event


def event_view(event: Event, delivery: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every field of the event's kind, null when unset, and its delivery (:mod:`bridge.listing.delivery_view`)."""
    view: dict[str, Any] = {
        "app_name": event.app_name,
        "event_id": event.id,
        "event_time": rfc3339(event.event_time),
        "event_type": event.event_type,
    }
    for name in distelli.FIELDS_BY_TYPE.get(event.event_type, ()):
        view[name] = event.fields.get(name)
    view["delivery"] = dict(delivery or NOTHING_SENT)
    closed = stale.listing(event.state, distelli.is_terminal(event.status))
    if closed:
        view["closed_by_bridge"] = closed
    return view
