"""HubSpot's REST wire format over WSGI: routing, auth, rate limits, fault injection.

Paths and JSON field names follow what hubspot-api-client 12 sends and parses (its
generated models name every field), so the real client runs unchanged against it.
"""

from __future__ import annotations

import html
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.faults import Fault, take_fault
from sandbox.hubspot import CallRecord, HubSpotSandbox, Record, WriteSource
from sandbox.hubspot_model import (
    ASSOCIATION_BY_ID,
    OBJECT_TYPE_IDS,
    SINGULAR,
    ApiError,
    PropertyDef,
    correlation_id,
    default_association,
    iso,
    now,
    parse_instant,
    resolve_object_type,
)
from sandbox.hubspot_scopes import missing_scopes_body, required_scopes

JsonBody = dict[str, Any] | list[Any]
Answer = tuple[int, JsonBody | None]
BATCH_LIMIT = 100
HISTORY_BATCH_LIMIT = 50  # batch reads asking for propertiesWithHistory
SEARCH_LIMIT = 200

_RULES = [
    ("POST", "/oauth/v2/private-apps/get/access-token-info", "token_info"),
    ("GET", "/account-info/v3/details", "account_info"),
    ("GET", "/crm/v3/owners/", "owners"),
    ("GET", "/crm/v3/owners", "owners"),
    ("GET", "/crm/v3/owners/<owner_id>", "owner"),
    ("GET", "/crm/v3/properties/<otype>", "properties"),
    ("POST", "/crm/v3/properties/<otype>", "property_create"),
    ("GET", "/crm/v3/properties/<otype>/groups", "groups"),
    ("POST", "/crm/v3/properties/<otype>/groups", "group_create"),
    ("GET", "/crm/v3/properties/<otype>/groups/<name>", "group"),
    ("GET", "/crm/v3/properties/<otype>/<name>", "property"),
    ("PATCH", "/crm/v3/properties/<otype>/<name>", "property_update"),
    ("GET", "/crm/v3/pipelines/<otype>", "pipelines"),
    ("GET", "/crm/v3/pipelines/<otype>/<pipeline_id>", "pipeline"),
    ("GET", "/crm/v3/objects/<otype>", "object_list"),
    ("POST", "/crm/v3/objects/<otype>", "object_create"),
    ("POST", "/crm/v3/objects/<otype>/search", "object_search"),
    ("POST", "/crm/v3/objects/<otype>/batch/read", "batch_read"),
    ("POST", "/crm/v3/objects/<otype>/batch/create", "batch_create"),
    ("POST", "/crm/v3/objects/<otype>/batch/update", "batch_update"),
    ("POST", "/crm/v3/objects/<otype>/batch/upsert", "batch_upsert"),
    ("POST", "/crm/v3/objects/<otype>/batch/archive", "batch_archive"),
    ("GET", "/crm/v3/objects/<otype>/<oid>", "object_get"),
    ("PATCH", "/crm/v3/objects/<otype>/<oid>", "object_update"),
    ("DELETE", "/crm/v3/objects/<otype>/<oid>", "object_archive"),
    ("GET", "/crm/v4/objects/<otype>/<oid>/associations/<to>", "v4_list"),
    ("PUT", "/crm/v4/objects/<otype>/<oid>/associations/default/<to>/<tid>", "v4_default"),
    ("PUT", "/crm/v4/objects/<otype>/<oid>/associations/<to>/<tid>", "v4_create"),
    ("DELETE", "/crm/v4/objects/<otype>/<oid>/associations/<to>/<tid>", "v4_archive"),
    ("POST", "/crm/v4/associations/<otype>/<to>/batch/read", "v4_batch_read"),
    ("POST", "/crm/v4/associations/<otype>/<to>/batch/associate/default", "v4_batch_default"),
    ("POST", "/crm/v4/associations/<otype>/<to>/batch/create", "v4_batch_create"),
    # Attachments: files attached to notes/emails (the engagements themselves are read
    # through the object routes above). Scopes: `files` or `files.ui_hidden.read`.
    ("GET", "/files/v3/files/<file_id>", "file_get"),
]
_UI_RULE = "/contacts/<int:portal>/record/<type_id>/<oid>"


class HubSpotApp:
    """The WSGI application in front of one `HubSpotSandbox`."""

    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sandbox = sandbox
        rules = [Rule(path, methods=[method], endpoint=name) for method, path, name in _RULES]
        rules.append(Rule(_UI_RULE, methods=["GET"], endpoint="ui_record"))
        rules.append(Rule("/", methods=["GET"], endpoint="ui_index"))
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        response = self.handle(Request(environ))
        return response(environ, start_response)

    # ------------------------------------------------------------ request flow

    def handle(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return _json(405, _error_body(405, "METHOD_NOT_ALLOWED", "HTTP method not allowed"))
        except NotFound:
            return _json(404, _error_body(404, "OBJECT_NOT_FOUND", f"No route for {request.path}"))
        except HTTPException as exc:  # e.g. a redirect werkzeug wants to issue
            return _json(exc.code or 400, _error_body(400, "VALIDATION_ERROR", str(exc)))
        if str(endpoint).startswith("ui_"):
            return self._ui(str(endpoint), dict(args))
        chaos = self.sandbox.chaos
        verdict, status = chaos.pick()
        if verdict == "error" or verdict == "limited":
            response = self._chaos_answer(status)
        else:
            if verdict == "slow":
                # Carried out only after the client has stopped waiting for it.
                time.sleep(chaos.late_seconds)
            response = self._api(request, str(endpoint), dict(args))
        with self.sandbox.lock:
            self.sandbox.call_log.append(
                CallRecord(request.method, request.path, response.status_code, time.time())
            )
        if verdict == "late":
            # Done and logged; the answer leaves after the client has stopped waiting.
            time.sleep(chaos.late_seconds)
        return response

    def _chaos_answer(self, status: int) -> Response:
        """An injected 5xx, or a 429 of a spent ten-second window with its headers."""
        response = _fault_answer(Fault(1, status, None), self.sandbox.portal_id)
        if status == 429:
            limit, window = self.sandbox.rate_limit or (100, 10.0)
            response.headers.update({
                "X-HubSpot-RateLimit-Max": str(limit),
                "X-HubSpot-RateLimit-Remaining": "0",
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
            })  # fmt: skip
        return response

    def _api(self, request: Request, endpoint: str, args: dict[str, Any]) -> Response:
        fault = self._take_fault(request.path)
        if fault is not None:
            return _fault_answer(fault, self.sandbox.portal_id)
        token = _bearer(request)
        if token is None or token not in self.sandbox.tokens:
            return _json(
                401,
                _error_body(
                    401,
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                ),
            )
        required = required_scopes(request.method, request.path) or ()
        if not set(required) <= self.sandbox.token_scopes.get(token, frozenset()):
            return _json(403, missing_scopes_body(required))
        is_search = endpoint == "object_search"
        limited, headers = self._rate_limit(token, is_search)
        if limited is not None:
            return _json(429, limited, headers)
        try:
            body = _parse_body(request)
            source = WriteSource.app(self.sandbox.tokens[token])
            handler: Callable[..., Answer] = getattr(self, f"do_{endpoint}")
            with self.sandbox.lock:
                status, payload = handler(request=request, body=body, source=source, **args)
        except ApiError as exc:
            return _json(exc.status, exc.body(), headers)
        return _json(status, payload, headers)

    def _take_fault(self, path: str) -> Fault | None:
        with self.sandbox.lock:
            fault = take_fault(self.sandbox.faults, path)
            self.sandbox.faults = [f for f in self.sandbox.faults if f.remaining > 0]
        return fault

    def _rate_limit(
        self, token: str, is_search: bool
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """(429 body or None, headers): rolling-window limits per token."""
        box = self.sandbox
        with box.lock:
            moment = time.monotonic()
            policies: list[tuple[str, tuple[int, float]]] = []
            if box.rate_limit:
                policies.append(("TEN_SECONDLY_ROLLING", box.rate_limit))
            if is_search and box.search_rate_limit:
                policies.append(("SECONDLY", box.search_rate_limit))
            windows: dict[str, deque[float]] = {}
            for policy, (_limit, window) in policies:
                hits = box.request_times.setdefault((token, policy), deque())
                while hits and hits[0] <= moment - window:
                    hits.popleft()
                windows[policy] = hits
            exceeded = next((p for p, (limit, _) in policies if len(windows[p]) >= limit), None)
            if exceeded is None:
                for hits in windows.values():
                    hits.append(moment)
            headers: dict[str, str] = {}
            # HubSpot's search answers carry no rate-limit headers.
            if box.rate_limit and not is_search:
                limit, window = box.rate_limit
                used = len(windows["TEN_SECONDLY_ROLLING"])
                headers = {
                    "X-HubSpot-RateLimit-Max": str(limit),
                    "X-HubSpot-RateLimit-Remaining": str(max(0, limit - used)),
                    "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(window * 1000)),
                    "X-HubSpot-RateLimit-Daily": "250000",
                    "X-HubSpot-RateLimit-Daily-Remaining": "249999",
                }
        if exceeded is None:
            return None, headers
        words = "ten_secondly_rolling" if exceeded == "TEN_SECONDLY_ROLLING" else "secondly"
        return {
            "status": "error",
            "message": f"You have reached your {words} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": exceeded,
            "groupName": f"api-calls:{box.portal_id}",
        }, headers

    # ------------------------------------------------------------- endpoints

    def do_token_info(self, body: Any, **_: Any) -> Answer:
        token = str(_object(body).get("tokenKey") or "")
        if token not in self.sandbox.tokens:
            raise ApiError(404, "OBJECT_NOT_FOUND", "No access token found for this tokenKey")
        return 200, {
            "userId": 1,
            "hubId": self.sandbox.portal_id,
            "appId": self.sandbox.tokens[token],
            "scopes": sorted(self.sandbox.token_scopes.get(token, frozenset())),
        }

    def do_account_info(self, **_: Any) -> Answer:
        box = self.sandbox
        host = box.base_url.split("://", 1)[-1] if box.base_url else "app.hubspot.com"
        host = box.ui_domain or host
        return 200, {
            "portalId": box.portal_id,
            "accountType": "STANDARD",
            "timeZone": box.time_zone,
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "+00:00",
            "utcOffsetMilliseconds": 0,
            "uiDomain": host,
            "dataHostingLocation": "na1",
        }

    def do_owners(self, request: Request, **_: Any) -> Answer:
        owners = list(self.sandbox.owners.values())
        email = request.args.get("email")
        if email:
            owners = [o for o in owners if o.email.lower() == email.lower()]
        limit = _int_arg(request, "limit", 100, 500)
        return 200, _page([o.as_wire() for o in owners], request.args.get("after"), limit)

    def do_owner(self, request: Request, owner_id: str, **_: Any) -> Answer:
        by_user = request.args.get("idProperty") == "userId"
        for owner in self.sandbox.owners.values():
            if (str(owner.user_id) if by_user else owner.id) == owner_id:
                return 200, owner.as_wire()
        raise ApiError(404, "OBJECT_NOT_FOUND", f"Owner {owner_id} not found")

    # properties ------------------------------------------------------------

    def do_properties(self, otype: str, **_: Any) -> Answer:
        defs = self.sandbox.properties[self._otype(otype)].values()
        return 200, {"results": [p.as_wire() for p in defs]}

    def do_property(self, otype: str, name: str, **_: Any) -> Answer:
        return 200, self._property(otype, name).as_wire()

    def do_property_create(self, otype: str, body: Any, **_: Any) -> Answer:
        return 201, self.sandbox.create_property(self._otype(otype), _object(body)).as_wire()

    def do_property_update(self, otype: str, name: str, body: Any, **_: Any) -> Answer:
        return 200, self.sandbox.update_property(self._otype(otype), name, _object(body)).as_wire()

    def do_groups(self, otype: str, **_: Any) -> Answer:
        return 200, {"results": list(self.sandbox.groups[self._otype(otype)].values())}

    def do_group(self, otype: str, name: str, **_: Any) -> Answer:
        group = self.sandbox.groups[self._otype(otype)].get(name)
        if group is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find property group {name}")
        return 200, group

    def do_group_create(self, otype: str, body: Any, **_: Any) -> Answer:
        return 201, self.sandbox.create_group(self._otype(otype), _object(body))

    def do_pipelines(self, otype: str, **_: Any) -> Answer:
        pipes = self.sandbox.pipelines.get(self._otype(otype), {})
        return 200, {"results": [p.as_wire() for p in pipes.values()]}

    def do_pipeline(self, otype: str, pipeline_id: str, **_: Any) -> Answer:
        pipe = self.sandbox.pipelines.get(self._otype(otype), {}).get(pipeline_id)
        if pipe is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find pipeline {pipeline_id}")
        return 200, pipe.as_wire()

    # objects ------------------------------------------------------------------

    def do_object_get(self, request: Request, otype: str, oid: str, **_: Any) -> Answer:
        kind = self._otype(otype)
        rec = self.sandbox.find(kind, oid, request.args.get("idProperty"))
        return 200, self.sandbox.record_wire(
            rec,
            _list_arg(request, "properties"),
            _list_arg(request, "propertiesWithHistory"),
            _list_arg(request, "associations"),
        )

    def do_object_list(self, request: Request, otype: str, **_: Any) -> Answer:
        kind = self._otype(otype)
        live = [r for r in self.sandbox.records[kind].values() if not r.archived]
        limit = _int_arg(request, "limit", 10, 100)
        props = _list_arg(request, "properties")
        assoc = _list_arg(request, "associations")
        wired = [self.sandbox.record_wire(r, props, None, assoc) for r in live]
        return 200, _page(wired, request.args.get("after"), limit)

    def do_object_create(self, otype: str, body: Any, source: WriteSource, **_: Any) -> Answer:
        kind = self._otype(otype)
        props, assocs = self._create_input(kind, _object(body))
        if self.sandbox.take_late_create(kind, [(props, assocs)], source):
            raise _late_answer()
        rec = self.sandbox.create_many(kind, [(props, assocs)], source)[0]
        return 201, self.sandbox.record_wire(rec, list(rec.properties))

    def do_object_update(
        self, request: Request, otype: str, oid: str, body: Any, source: WriteSource, **_: Any
    ) -> Answer:
        kind = self._otype(otype)
        props = _properties(_object(body))
        rec = self.sandbox.update(
            kind, oid, props, source=source, id_property=request.args.get("idProperty")
        )
        return 200, self.sandbox.record_wire(rec, list(rec.properties))

    def do_object_archive(self, otype: str, oid: str, **_: Any) -> Answer:
        self.sandbox.archive(self._otype(otype), oid)
        return 204, None

    def do_batch_read(self, request: Request, otype: str, body: Any, **_: Any) -> Answer:
        kind = self._otype(otype)
        data = _object(body)
        inputs = _inputs(data)
        if data.get("propertiesWithHistory") and len(inputs) > HISTORY_BATCH_LIMIT:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Batch read with propertiesWithHistory cannot exceed {HISTORY_BATCH_LIMIT} "
                f"inputs, got {len(inputs)}",
            )
        started = now()
        found, missing = self._find_inputs(kind, inputs, lambda _item: data.get("idProperty"))
        results = [
            self.sandbox.record_wire(rec, data.get("properties"), data.get("propertiesWithHistory"))
            for rec, _item in found
        ]
        errors = []
        if missing:
            errors.append(
                _standard_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {SINGULAR[kind].upper()} objects, they may be deleted "
                    "or not exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return _batch(results, errors, started)

    def _find_inputs(
        self, kind: str, inputs: list[dict[str, Any]], id_property: Callable[[dict[str, Any]], Any]
    ) -> tuple[list[tuple[Record, dict[str, Any]]], list[str]]:
        """Batch inputs -> (found records with their input, ids HubSpot would call missing)."""
        found, missing = [], []
        for item in inputs:
            try:
                found.append(
                    (self.sandbox.find(kind, str(item.get("id")), id_property(item)), item)
                )
            except ApiError:
                missing.append(str(item.get("id")))
        return found, missing

    def do_batch_create(self, otype: str, body: Any, source: WriteSource, **_: Any) -> Answer:
        """All or nothing; with an `objectWriteTraceId` on every input, multi-status: each
        input is created or refused alone, its error naming its trace id (HubSpot's
        "multi-status errors" for batch creates)."""
        kind = self._otype(otype)
        started = now()
        inputs = _inputs(_object(body))
        prepared = [self._create_input(kind, _object(i)) for i in inputs]
        if self.sandbox.take_late_create(kind, prepared, source):
            raise _late_answer()
        traces = [i.get("objectWriteTraceId") for i in inputs]
        if not inputs or not all(isinstance(t, str) and t for t in traces):
            records = self.sandbox.create_many(kind, prepared, source)
            status, payload = _batch(
                [self.sandbox.record_wire(r, list(r.properties)) for r in records], [], started
            )
            return 201, payload
        if len(set(traces)) < len(traces):
            raise ApiError(400, "VALIDATION_ERROR", "objectWriteTraceId values must be unique")
        results: list[Any] = []
        errors: list[dict[str, Any]] = []
        for trace, outcome in zip(
            traces, self.sandbox.create_each(kind, prepared, source), strict=True
        ):
            if isinstance(outcome, ApiError):
                error = outcome.body()
                context = dict(error.get("context") or {})
                error.pop("correlationId", None)
                errors.append({**error, "context": {**context, "objectWriteTraceId": [trace]}})
            else:
                wired = self.sandbox.record_wire(outcome, list(outcome.properties))
                results.append({**wired, "objectWriteTraceId": trace})
        status, payload = _batch(results, errors, started)
        return (207 if errors else 201), payload

    def do_batch_update(self, otype: str, body: Any, source: WriteSource, **_: Any) -> Answer:
        kind = self._otype(otype)
        started = now()
        inputs = _inputs(_object(body))
        ids = [str(i.get("id")) for i in inputs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Duplicate IDs found in batch input: {dupes}. IDs must be unique",
            )
        found, missing = self._find_inputs(kind, inputs, lambda item: item.get("idProperty"))
        records = self.sandbox.update_many(
            kind, [(rec, _properties(item)) for rec, item in found], source
        )
        errors = (
            [_standard_error("OBJECT_NOT_FOUND", "Object not found.", {"ids": missing})]
            if missing
            else []
        )
        return _batch(
            [self.sandbox.record_wire(r, list(r.properties)) for r in records], errors, started
        )

    def do_batch_upsert(self, otype: str, body: Any, source: WriteSource, **_: Any) -> Answer:
        kind = self._otype(otype)
        started = now()
        inputs = _inputs(_object(body))
        creates: list[tuple[int, dict[str, Any]]] = []
        updates: list[tuple[int, Record, dict[str, Any]]] = []
        for index, item in enumerate(inputs):
            id_property = item.get("idProperty")
            if not id_property:
                raise ApiError(400, "VALIDATION_ERROR", "idProperty is required for upsert")
            props = _properties(item)
            try:
                rec = self.sandbox.find(kind, str(item.get("id")), id_property)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                creates.append((index, {**props, id_property: str(item.get("id"))}))
                continue
            updates.append((index, rec, props))
        results: list[tuple[int, dict[str, Any]]] = []
        updated = self.sandbox.update_many(kind, [(r, p) for _i, r, p in updates], source)
        for (index, _old, _props), rec in zip(updates, updated, strict=True):
            results.append(
                (index, {**self.sandbox.record_wire(rec, list(rec.properties)), "new": False})
            )
        created = self.sandbox.create_many(kind, [(p, []) for _i, p in creates], source)
        for (index, _props), rec in zip(creates, created, strict=True):
            results.append(
                (index, {**self.sandbox.record_wire(rec, list(rec.properties)), "new": True})
            )
        return _batch([r for _, r in sorted(results, key=lambda x: x[0])], [], started)

    def do_batch_archive(self, otype: str, body: Any, **_: Any) -> Answer:
        kind = self._otype(otype)
        for item in _inputs(_object(body)):
            rec = self.sandbox.records[kind].get(str(item.get("id")))
            if rec is not None:
                rec.archived = True
        return 204, None

    def do_object_search(self, otype: str, body: Any, **_: Any) -> Answer:
        kind = self._otype(otype)
        return 200, _Search(self.sandbox, kind, _object(body)).run()

    # associations v4 -------------------------------------------------------

    def do_v4_list(self, request: Request, otype: str, oid: str, to: str, **_: Any) -> Answer:
        kind, to_kind = self._otype(otype), self._otype(to)
        limit = _int_arg(request, "limit", 500, 500)
        rows = [
            self._v4_row(kind, to_kind, tid, types)
            for tid, types in self.sandbox.associated(kind, oid, to_kind)
        ]
        return 200, _page(rows, request.args.get("after"), limit)

    def do_v4_default(self, otype: str, oid: str, to: str, tid: str, **_: Any) -> Answer:
        started = now()
        results = self._associate_default(self._otype(otype), oid, self._otype(to), tid)
        return _batch(results, [], started)

    def do_v4_create(self, otype: str, oid: str, to: str, tid: str, body: Any, **_: Any) -> Answer:
        kind, to_kind = self._otype(otype), self._otype(to)
        specs = body if isinstance(body, list) else []
        if not specs:
            raise ApiError(400, "VALIDATION_ERROR", "At least one association type is required")
        for spec in specs:
            self.sandbox.associate(kind, oid, to_kind, tid, _type_id(spec))
        return 201, self._labels_between(kind, oid, to_kind, tid)

    def do_v4_archive(self, otype: str, oid: str, to: str, tid: str, **_: Any) -> Answer:
        self.sandbox.dissociate(self._otype(otype), oid, self._otype(to), tid)
        return 204, None

    def do_v4_batch_read(self, otype: str, to: str, body: Any, **_: Any) -> Answer:
        kind, to_kind = self._otype(otype), self._otype(to)
        started = now()
        results, errors = [], []
        page_size = self.sandbox.association_batch_page
        for item in _inputs(_object(body)):
            from_id = str(item.get("id"))
            linked = self.sandbox.associated(kind, from_id, to_kind)
            after = str(item.get("after") or "")
            start = int(after) if after.isdigit() else 0
            page = linked[start : start + page_size]
            if not page:
                errors.append(
                    {
                        **_standard_error(
                            "OBJECT_NOT_FOUND",
                            f"No {SINGULAR[to_kind]} is associated with "
                            f"{SINGULAR[kind]} {from_id}.",
                            {"fromObjectId": [from_id]},
                        ),
                        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    }
                )
                continue
            result: dict[str, Any] = {
                "from": {"id": from_id},
                "to": [self._v4_row(kind, to_kind, tid, types) for tid, types in page],
            }
            if start + page_size < len(linked):
                # Each object has its own cursor; sent back as the input's `after`.
                result["paging"] = {"next": {"after": str(start + page_size)}}
            results.append(result)
        return _batch(results, errors, started)

    def do_v4_batch_default(self, otype: str, to: str, body: Any, **_: Any) -> Answer:
        kind, to_kind = self._otype(otype), self._otype(to)
        started = now()
        results = []
        for item in _inputs(_object(body)):
            from_id = str((item.get("from") or {}).get("id"))
            to_id = str((item.get("to") or {}).get("id"))
            results += self._associate_default(kind, from_id, to_kind, to_id)
        return _batch(results, [], started)

    def do_v4_batch_create(self, otype: str, to: str, body: Any, **_: Any) -> Answer:
        kind, to_kind = self._otype(otype), self._otype(to)
        started = now()
        results = []
        for item in _inputs(_object(body)):
            from_id = str((item.get("from") or {}).get("id"))
            to_id = str((item.get("to") or {}).get("id"))
            for spec in item.get("types") or []:
                self.sandbox.associate(kind, from_id, to_kind, to_id, _type_id(spec))
            results.append(self._labels_between(kind, from_id, to_kind, to_id))
        status, payload = _batch(results, [], started)
        return 201, payload

    # files ------------------------------------------------------------------

    def do_file_get(self, file_id: str, **_: Any) -> Answer:
        stored = self.sandbox.files.get(file_id)
        if stored is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"File {file_id} not found")
        return 200, stored.as_wire(self.sandbox.base_url)

    # -------------------------------------------------------------- helpers

    def _otype(self, raw: str) -> str:
        return self.sandbox._object_type(raw)

    def _property(self, otype: str, name: str) -> PropertyDef:
        prop = self.sandbox.properties[self._otype(otype)].get(name)
        if prop is None:
            raise ApiError(
                404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type {otype}"
            )
        return prop

    def _create_input(
        self, kind: str, data: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str, int]]]:
        assocs: list[tuple[str, str, int]] = []
        for link in data.get("associations") or []:
            to_id = str((link.get("to") or {}).get("id", ""))
            target = self._target_type(kind, link.get("types") or [])
            for spec in link.get("types") or []:
                assocs.append((target, to_id, _type_id(spec)))
        return _properties(data), assocs

    @staticmethod
    def _target_type(kind: str, specs: list[dict[str, Any]]) -> str:
        # A create's association names only the type id; the id implies the target type.
        for spec in specs:
            for from_type, to_type, type_id in ASSOCIATION_BY_ID:
                if from_type == kind and type_id == _type_id(spec):
                    return to_type
        ids = [s.get("associationTypeId") for s in specs]
        raise ApiError(
            400, "VALIDATION_ERROR", f"association type ids {ids} are not valid for {kind}"
        )

    def _v4_row(self, kind: str, to_kind: str, tid: str, types: set[int]) -> dict[str, Any]:
        specs = [ASSOCIATION_BY_ID[(kind, to_kind, t)] for t in sorted(types)]
        return {
            "toObjectId": int(tid),
            "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": s.type_id, "label": s.label}
                for s in specs
            ],
        }

    def _associate_default(
        self, kind: str, oid: str, to_kind: str, tid: str
    ) -> list[dict[str, Any]]:
        spec = default_association(kind, to_kind)
        if spec is None:
            raise ApiError(
                400, "VALIDATION_ERROR", f"No default association from {kind} to {to_kind}"
            )
        self.sandbox.associate(kind, oid, to_kind, tid, spec.type_id)
        return [
            {
                "from": {"id": oid},
                "to": {"id": tid},
                "associationSpec": {
                    "associationCategory": "HUBSPOT_DEFINED",
                    "associationTypeId": spec.type_id,
                },
            },
            {
                "from": {"id": tid},
                "to": {"id": oid},
                "associationSpec": {
                    "associationCategory": "HUBSPOT_DEFINED",
                    "associationTypeId": spec.inverse_id,
                },
            },
        ]

    def _labels_between(self, kind: str, oid: str, to_kind: str, tid: str) -> dict[str, Any]:
        types = self.sandbox.associations.get((kind, oid), {}).get((to_kind, tid), set())
        labels = [ASSOCIATION_BY_ID[(kind, to_kind, t)].label for t in sorted(types)]
        return {
            "fromObjectTypeId": OBJECT_TYPE_IDS[kind],
            "fromObjectId": int(oid),
            "toObjectTypeId": OBJECT_TYPE_IDS[to_kind],
            "toObjectId": int(tid),
            "labels": [label for label in labels if label],
        }

    def _ui(self, endpoint: str, args: dict[str, Any]) -> Response:
        box = self.sandbox
        if endpoint == "ui_index":
            rows = "".join(
                f'<li><a href="{html.escape(box.ui_url(kind, rid))}">{kind} {rid}</a></li>'
                for kind, recs in box.records.items()
                for rid, rec in recs.items()
                if not rec.archived
            )
            return _html(200, f"HubSpot sandbox portal {box.portal_id}", f"<ul>{rows}</ul>")
        kind = resolve_object_type(str(args["type_id"]))
        with box.lock:
            rec = box.records.get(kind or "", {}).get(str(args["oid"]))
            if kind is None or rec is None or rec.archived or args["portal"] != box.portal_id:
                return _html(404, "Not found", "<p>This record does not exist.</p>")
            rows = "".join(
                f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                for k, v in sorted(rec.properties.items())
                if v != ""
            )
        title = f"{SINGULAR[kind].replace('_', ' ').title()} {rec.id}"
        return _html(200, title, f"<table>{rows}</table>")


class _Search:
    """POST /crm/v3/objects/{type}/search over what search can currently see."""

    def __init__(self, sandbox: HubSpotSandbox, kind: str, body: dict[str, Any]) -> None:
        self.sandbox = sandbox
        self.kind = kind
        self.body = body
        self.defs = sandbox.properties[kind]

    def run(self) -> dict[str, Any]:
        groups = self.body.get("filterGroups") or []
        filters = [f for g in groups for f in (g.get("filters") or [])]
        if (
            len(groups) > 5
            or any(len(g.get("filters") or []) > 6 for g in groups)
            or len(filters) > 18
        ):
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                "Too many filters: at most 5 filterGroups of 6 filters, 18 in all",
            )
        limit = int(self.body.get("limit") or 10)
        if limit > SEARCH_LIMIT or limit < 0:
            raise ApiError(400, "VALIDATION_ERROR", f"limit must be between 0 and {SEARCH_LIMIT}")
        for f in filters:
            self._check_filter(f)
        hits: list[tuple[Record, dict[str, str]]] = []
        for rec in self.sandbox.records[self.kind].values():
            view = self.sandbox.search_view(rec)
            if view is None:
                continue
            if not groups or any(
                all(self._match(rec, view, f) for f in g.get("filters") or []) for g in groups
            ):
                if self._query_match(view):
                    hits.append((rec, view))
        hits = self._sort(hits)
        start = int(self.body.get("after") or 0)
        if start + limit > self.sandbox.search_result_cap:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"Search cannot page past the first {self.sandbox.search_result_cap} results "
                "of a query; narrow the filters",
            )
        page = hits[start : start + limit]
        wired = [
            self.sandbox.record_wire(rec, self.body.get("properties"), props_override=view)
            for rec, view in page
        ]
        answer: dict[str, Any] = {"total": len(hits), "results": wired}
        if start + limit < len(hits):
            answer["paging"] = {"next": {"after": str(start + limit)}}
        return answer

    def _check_filter(self, f: dict[str, Any]) -> None:
        name = str(f.get("propertyName", ""))
        if name.startswith("associations."):
            return
        if name not in self.defs:
            raise ApiError(
                400,
                "VALIDATION_ERROR",
                f"There was a problem with the request: property {name} does not exist",
            )

    def _match(self, rec: Record, view: dict[str, str], f: dict[str, Any]) -> bool:
        name, op = str(f.get("propertyName")), str(f.get("operator", "EQ"))
        if name.startswith("associations."):
            to_kind = resolve_object_type(name.split(".", 1)[1]) or ""
            linked = {tid for tid, _ in self.sandbox.associated(self.kind, rec.id, to_kind)}
            wanted = {str(v) for v in (f.get("values") or [f.get("value")])}
            hit = bool(linked & wanted)
            return hit if op in ("EQ", "IN") else not hit
        prop = self.defs[name]
        raw = view.get(name, "")
        if op == "HAS_PROPERTY":
            return raw != ""
        if op == "NOT_HAS_PROPERTY":
            return raw == ""
        if op in ("NEQ", "NOT_IN"):
            return not self._match(rec, view, {**f, "operator": "EQ" if op == "NEQ" else "IN"})
        if raw == "":
            return False
        values = raw.split(";") if prop.multi else [raw]
        if op == "EQ":
            return any(_cmp(prop, v) == _cmp(prop, f.get("value")) for v in values)
        if op == "IN":
            wanted = {_cmp(prop, w) for w in f.get("values") or []}
            return any(_cmp(prop, v) in wanted for v in values)
        if op == "CONTAINS_TOKEN":
            token = str(f.get("value", "")).lower().replace("*", "")
            return token in raw.lower()
        mine, other = _cmp(prop, raw), _cmp(prop, f.get("value"))
        try:
            if op == "LT":
                return bool(mine < other)
            if op == "LTE":
                return bool(mine <= other)
            if op == "GT":
                return bool(mine > other)
            if op == "GTE":
                return bool(mine >= other)
            if op == "BETWEEN":
                return bool(other <= mine <= _cmp(prop, f.get("highValue")))
        except TypeError:
            return False
        raise ApiError(400, "VALIDATION_ERROR", f"Unsupported operator {op}")

    def _query_match(self, view: dict[str, str]) -> bool:
        query = str(self.body.get("query") or "").lower()
        return not query or any(query in v.lower() for v in view.values())

    def _sort(
        self, hits: list[tuple[Record, dict[str, str]]]
    ) -> list[tuple[Record, dict[str, str]]]:
        hits = sorted(hits, key=lambda h: int(h[0].id))
        for sort in reversed(self.body.get("sorts") or []):
            if isinstance(sort, dict):
                name = str(sort.get("propertyName", ""))
                descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
            else:
                descending = str(sort).startswith("-")
                name = str(sort).lstrip("-")
            prop = self.defs.get(name)
            if prop is None:
                continue
            present = [h for h in hits if h[1].get(name, "") != ""]
            absent = [h for h in hits if h[1].get(name, "") == ""]
            present.sort(key=_sort_key(prop, name), reverse=descending)
            hits = present + absent
        return hits


def _sort_key(prop: PropertyDef, name: str) -> Callable[[tuple[Record, dict[str, str]]], Any]:
    def key(hit: tuple[Record, dict[str, str]]) -> Any:
        return _cmp(prop, hit[1][name])

    return key


def _cmp(prop: PropertyDef, value: Any) -> Any:
    text = "" if value is None else str(value)
    if prop.type == "number":
        try:
            return float(text)
        except ValueError:
            return text
    if prop.type in ("date", "datetime"):
        moment = parse_instant(text)
        return moment.timestamp() if moment else text
    return text.lower()


# ------------------------------------------------------------------ wire helpers


def _json(status: int, payload: JsonBody | None, headers: dict[str, str] | None = None) -> Response:
    if payload is None:
        return Response(status=status, headers=headers or {})
    return Response(
        json.dumps(payload), status=status, mimetype="application/json", headers=headers or {}
    )


def _fault_answer(fault: Fault, portal_id: int) -> Response:
    """An injected failure in the shape HubSpot gives that status."""
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    if fault.status == 429:
        daily = fault.policy == "DAILY"
        body = {
            "status": "error",
            "message": "You have reached your daily limit."
            if daily
            else "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation_id(),
            "policyName": fault.policy or "TEN_SECONDLY_ROLLING",
            "groupName": f"api-calls-daily:{portal_id}" if daily else f"api-calls:{portal_id}",
        }
        return _json(429, body, headers)
    categories = {
        423: ("LOCKED", "The resource is locked; try again in 2 seconds"),
        477: ("MIGRATION_IN_PROGRESS", "This account is being migrated to another data center"),
    }
    category, message = categories.get(fault.status, ("INTERNAL_ERROR", "Internal error"))
    return _json(
        fault.status, _error_body(fault.status, category, f"{message} (injected)"), headers
    )


def _late_answer() -> ApiError:
    # What a client sees when HubSpot's edge gives up on a slow write that still lands.
    return ApiError(504, "GATEWAY_TIMEOUT", "The request timed out (injected; applied later)")


def _html(status: int, title: str, body: str) -> Response:
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(page, status=status, mimetype="text/html")


def _error_body(status: int, category: str, message: str) -> dict[str, Any]:
    return ApiError(status, category, message).body()


def _standard_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    }


def _batch(results: list[Any], errors: list[dict[str, Any]], started: Any) -> Answer:
    payload: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": iso(started),
        "completedAt": iso(now()),
    }
    if errors:
        payload["numErrors"] = len(errors)
        payload["errors"] = errors
        return 207, payload
    return 200, payload


def _page(items: list[Any], after: str | None, limit: int) -> dict[str, Any]:
    start = int(after) if after and after.isdigit() else 0
    answer: dict[str, Any] = {"results": items[start : start + limit]}
    if start + limit < len(items):
        answer["paging"] = {"next": {"after": str(start + limit)}}
    return answer


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _parse_body(request: Request) -> Any:
    raw = request.get_data(as_text=True)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}",
        ) from exc


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
    return body


def _inputs(data: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ApiError(400, "VALIDATION_ERROR", "inputs must be a list of objects")
    if len(inputs) > BATCH_LIMIT:
        raise ApiError(
            400,
            "VALIDATION_ERROR",
            f"Batch input cannot exceed {BATCH_LIMIT} inputs, got {len(inputs)}",
        )
    return inputs


def _properties(data: dict[str, Any]) -> dict[str, Any]:
    props = data.get("properties")
    if not isinstance(props, dict):
        raise ApiError(400, "VALIDATION_ERROR", "properties must be an object")
    return props


def _type_id(spec: Any) -> int:
    try:
        return int(spec["associationTypeId"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ApiError(400, "VALIDATION_ERROR", f"Invalid association spec: {spec!r}") from exc


def _list_arg(request: Request, name: str) -> list[str] | None:
    # The client repeats the parameter; browsers and curl users send commas.
    values: Iterable[str] = request.args.getlist(name)
    out = [v for raw in values for v in raw.split(",") if v]
    return out or None


def _int_arg(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ApiError(400, "VALIDATION_ERROR", f"{name} must be a number")
    return min(int(raw), maximum)


__all__ = ["HubSpotApp"]
