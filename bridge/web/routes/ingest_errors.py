"""HTTP for the write paths' refusals: each domain error of :mod:`bridge.ingest.ingest` becomes its status here, at the
routes, so storage code never speaks HTTP."""

from __future__ import annotations

from flask import Blueprint, Response

from bridge.ingest.ingest import FinishedEvent, IngestError, InvalidRecord, UnknownEvent
from bridge.web.errors import BridgeError, Conflict, InvalidInput, NotFound, error_response

_AS_HTTP: dict[type[IngestError], type[BridgeError]] = {
    UnknownEvent: NotFound,
    FinishedEvent: Conflict,
    InvalidRecord: InvalidInput,
}


def answer_ingest_errors(blueprint: Blueprint) -> None:
    """Answer the write paths' refusals raised in ``blueprint``'s views with the one JSON error shape."""

    @blueprint.errorhandler(IngestError)
    def _refused(error: IngestError) -> tuple[Response, int]:
        http = _AS_HTTP.get(type(error), InvalidInput)
        return error_response(http(error.message, fields=error.fields))
