"""Salesforce's REST wire format over WSGI: OAuth, query, sObjects, collections,
composite, limits, describe; sessions, the daily API limit and `Sforce-Limit-Info`.

URLs and headers follow what simple-salesforce 1.12 sends (`/services/data/vXX.X/`
paths with or without a trailing slash, `Authorization: Bearer`, form-encoded token
requests, the SOAP `login` for username + password + security token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException, ElementTree
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.wrappers import Request, Response

from sandbox.call_log import RecordingApp
from sandbox.salesforce import SalesforceSandbox
from sandbox.salesforce_model import SalesforceError, not_found
from sandbox.salesforce_soql import Executor, parse

Answer = tuple[int, Any, dict[str, str]]  # status, JSON body (None: no content), headers
COLLECTION_LIMIT = 200
COMPOSITE_LIMIT = 25
MAX_URI_BYTES = 16_384
MAX_SOQL_CHARS = 100_000
_DATA = "/services/data/v<version>"
_RULES = [
    ("POST", "/services/oauth2/token", "token"),
    ("POST", "/services/Soap/u/<version>", "soap_login"),
    ("GET", "/services/data", "versions"),
    ("GET", f"{_DATA}/limits", "limits"),
    ("GET", f"{_DATA}/query", "query"),
    ("GET", f"{_DATA}/query/<locator>", "query_more"),
    ("GET", f"{_DATA}/sobjects", "describe_global"),
    ("GET", f"{_DATA}/sobjects/<otype>/describe", "describe"),
    ("POST", f"{_DATA}/sobjects/<otype>", "create"),
    ("GET", f"{_DATA}/sobjects/<otype>/<rid>", "get"),
    ("PATCH", f"{_DATA}/sobjects/<otype>/<rid>", "update"),
    ("DELETE", f"{_DATA}/sobjects/<otype>/<rid>", "delete"),
    ("GET", f"{_DATA}/sobjects/<otype>/<field>/<path:value>", "get_by_external_id"),
    ("PATCH", f"{_DATA}/sobjects/<otype>/<field>/<path:value>", "upsert"),
    ("POST", f"{_DATA}/composite/sobjects", "collection_create"),
    ("PATCH", f"{_DATA}/composite/sobjects", "collection_update"),
    ("PATCH", f"{_DATA}/composite/sobjects/<otype>/<field>", "collection_upsert"),
    ("POST", f"{_DATA}/composite", "composite"),
]
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")


class SalesforceApp(RecordingApp):
    """The WSGI application in front of one `SalesforceSandbox`."""

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        super().__init__(sandbox, _RULES)
        self.sandbox = sandbox

    def handle(self, request: Request) -> Response:
        # Salesforce's request size limits: the URI, then the URI and headers together.
        uri = len(request.environ.get("RAW_URI") or request.full_path)
        headers = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
        if uri > MAX_URI_BYTES:
            return Response("URI Too Long", 414, content_type="text/plain")
        if uri + headers > MAX_URI_BYTES:
            return Response("Request Header Fields Too Large", 431, content_type="text/plain")
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except (NotFound, MethodNotAllowed):
            return _json(404, not_found().body())
        if endpoint == "token":
            return self._token(request)
        if endpoint == "soap_login":
            return self._soap_login(request)
        if endpoint == "versions":
            return _json(
                200, [{"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"}]
            )
        return self._api(request, str(endpoint), dict(args))

    # ---------------------------------------------------------------- the API

    def _api(self, request: Request, endpoint: str, args: dict[str, Any]) -> Response:
        box = self.sandbox
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        user = box.session_user(token)
        if user is None:
            body = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            return _json(401, body)
        if not box.count_api_request():
            error = SalesforceError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            return _json(403, error.body(), {"Sforce-Limit-Info": box.limit_info()})
        version = str(args.pop("version", ""))
        try:
            if not re.fullmatch(r"\d{2}\.0", version) or not 20 <= float(version) <= 66:
                raise not_found()
            body = _json_body(request)
            with box.lock:
                status, payload, headers = self.dispatch(
                    endpoint, args, body, request.args.to_dict(), user, version
                )
        except SalesforceError as error:
            status, payload, headers = error.status, error.body(), {}
        headers["Sforce-Limit-Info"] = box.limit_info()
        return _json(status, payload, headers)

    def dispatch(
        self,
        endpoint: str,
        args: dict[str, Any],
        body: Any,
        params: dict[str, str],
        user: str,
        version: str,
    ) -> Answer:
        handler: Callable[..., Answer] = getattr(self, f"do_{endpoint}")
        return handler(body=body, params=params, user=user, version=version, **args)

    def do_limits(self, **_: Any) -> Answer:
        box = self.sandbox
        remaining = max(0, box.daily_api_limit - box.api_requests_used)
        limits = {
            "DailyApiRequests": {"Max": box.daily_api_limit, "Remaining": remaining},
            "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
        }
        return 200, limits, {}

    def do_query(self, params: dict[str, str], version: str, **_: Any) -> Answer:
        text = params.get("q")
        if not text:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        if len(text) > MAX_SOQL_CHARS:
            raise SalesforceError(
                400,
                "MALFORMED_QUERY",
                f"Query is too long: {len(text)} characters, at most {MAX_SOQL_CHARS}",
            )
        box = self.sandbox
        executor = Executor(box.store, version, self._park, box.child_batch_size)
        rows = executor.run(parse(text))
        return 200, self._page(rows, None, 0, version), {}

    def do_query_more(self, locator: str, version: str, **_: Any) -> Answer:
        cursor, _sep, offset = locator.partition("-")
        rows = self.sandbox.cursors.get(cursor)
        if rows is None or not offset.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return 200, self._page(rows, cursor, int(offset), version), {}

    def _park(self, rows: list[Any]) -> str:
        cursor = self.sandbox.store.data.ids.new("01g")
        self.sandbox.cursors[cursor] = rows
        return cursor

    def _page(self, rows: list[Any], cursor: str | None, offset: int, version: str) -> Any:
        """One batch of at most `query_batch_size` records, children included (the
        docs: "child objects count toward the number of records for the batch size"),
        and always at least one parent row."""
        end, weight = offset, 0
        while end < len(rows):
            weight += _weight(rows[end])
            if weight > self.sandbox.query_batch_size and end > offset:
                break
            end += 1
        page: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if not page["done"]:
            cursor = cursor or self._park(rows)
            page["nextRecordsUrl"] = f"/services/data/v{version}/query/{cursor}-{end}"
        page["records"] = rows[offset:end]
        return page

    def do_describe_global(self, version: str, **_: Any) -> Answer:
        objects = self.sandbox.store.schema.values()
        described = [
            {
                k: v
                for k, v in o.describe(version).items()
                if k not in ("fields", "childRelationships")
            }
            for o in objects
        ]
        return 200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": described}, {}

    def do_describe(self, otype: str, version: str, **_: Any) -> Answer:
        return 200, self.sandbox.store.object(otype).describe(version), {}

    def do_create(self, otype: str, body: Any, user: str, version: str, **_: Any) -> Answer:
        store = self.sandbox.store
        obj = store.object(otype)
        values = _record_body(body)
        if "Id" in values or "id" in values:
            raise SalesforceError(400, "INVALID_FIELD", "cannot specify Id in an insert call")
        record_id = store.create(obj, values, user)
        location = {"Location": f"/services/data/v{version}/sobjects/{obj.name}/{record_id}"}
        return 201, {"id": record_id, "success": True, "errors": []}, location

    def do_get(
        self, otype: str, rid: str, params: dict[str, str], version: str, **_: Any
    ) -> Answer:
        store = self.sandbox.store
        obj = store.object(otype)
        return 200, self._record(obj, store.find(obj, rid), params, version), {}

    def do_update(self, otype: str, rid: str, body: Any, user: str, **_: Any) -> Answer:
        store = self.sandbox.store
        store.update(store.object(otype), rid, _record_body(body), user)
        return 204, None, {}

    def do_delete(self, otype: str, rid: str, **_: Any) -> Answer:
        store = self.sandbox.store
        store.delete(store.object(otype), rid)
        return 204, None, {}

    def do_get_by_external_id(
        self, otype: str, field: str, value: str, params: dict[str, str], version: str, **_: Any
    ) -> Answer:
        store = self.sandbox.store
        obj = store.object(otype)
        rows = store.by_external_id(obj, field, value)
        if not rows:
            raise not_found()
        if len(rows) > 1:
            return (
                300,
                [f"/services/data/v{version}/sobjects/{obj.name}/{r['Id']}" for r in rows],
                {},
            )
        return 200, self._record(obj, rows[0], params, version), {}

    def do_upsert(
        self, otype: str, field: str, value: str, body: Any, user: str, version: str, **_: Any
    ) -> Answer:
        record_id, created = self._upsert(otype, field, value, _record_body(body), user)
        result = {"id": record_id, "success": True, "errors": [], "created": created}
        if created:
            location = {"Location": f"/services/data/v{version}/sobjects/{otype}/{record_id}"}
            return 201, result, location
        # Since API 46.0 an update by upsert answers 200 with the result, before it 204.
        return (200, result, {}) if float(version) >= 46 else (204, None, {})

    def _upsert(
        self, otype: str, field: str, value: str, values: dict[str, Any], user: str
    ) -> tuple[str, bool]:
        store = self.sandbox.store
        obj = store.object(otype)
        rows = store.by_external_id(obj, field, value)
        definition = obj.field(field)
        assert definition is not None  # by_external_id refused unknown fields
        sent = values.pop(definition.name, values.pop(field, value))
        if str(sent).lower() != value.lower():
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"The value in the URL ({value}) and the body ({sent}) for {definition.name} "
                "do not match",
            )
        if len(rows) > 1:
            raise SalesforceError(
                300, "MULTIPLE_CHOICES", f"More than one record found for {definition.name}"
            )
        if rows:
            store.update(obj, rows[0]["Id"], values, user)
            return str(rows[0]["Id"]), False
        if definition.type == "id":
            raise not_found()
        return store.create(obj, {**values, definition.name: value}, user), True

    def _record(self, obj: Any, row: dict[str, Any], params: dict[str, str], version: str) -> Any:
        wanted = [f.strip() for f in params.get("fields", "").split(",") if f.strip()]
        names = [f.name for f in obj.fields.values()]
        if wanted:
            names = []
            for name in wanted:
                definition = obj.field(name)
                if definition is None:
                    raise SalesforceError(
                        400,
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {obj.name}",
                    )
                names.append(definition.name)
        record = {"attributes": Executor(self.sandbox.store, version).attributes(obj, row)}
        record.update({name: row.get(name) for name in names})
        return record

    # ----------------------------------------------------- sObject Collections

    def do_collection_create(self, body: Any, user: str, **_: Any) -> Answer:
        def create(record: dict[str, Any]) -> dict[str, Any]:
            if "Id" in record:
                raise SalesforceError(400, "INVALID_FIELD", "cannot specify Id in an insert call")
            record_id = self.sandbox.store.create(self._record_type(record), record, user)
            return {"id": record_id, "success": True, "errors": []}

        return self._collection(body, create)

    def do_collection_update(self, body: Any, user: str, **_: Any) -> Answer:
        def update(record: dict[str, Any]) -> dict[str, Any]:
            record_id = record.get("Id") or record.get("id")
            if not record_id:
                raise SalesforceError(400, "MISSING_ARGUMENT", "Id not specified in an update call")
            values = {k: v for k, v in record.items() if k not in ("Id", "id")}
            self.sandbox.store.update(self._record_type(record), str(record_id), values, user)
            return {"id": record_id, "success": True, "errors": []}

        return self._collection(body, update)

    def do_collection_upsert(
        self, otype: str, field: str, body: Any, user: str, **_: Any
    ) -> Answer:
        def upsert(record: dict[str, Any]) -> dict[str, Any]:
            self._record_type(record)
            value = record.get(field)
            if value in (None, ""):
                raise SalesforceError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{field}]",
                    [field],
                )
            values = {k: v for k, v in record.items() if k != "attributes"}
            record_id, created = self._upsert(otype, field, str(value), values, user)
            return {"id": record_id, "success": True, "errors": [], "created": created}

        return self._collection(body, upsert)

    def _record_type(self, record: dict[str, Any]) -> Any:
        kind = (record.get("attributes") or {}).get("type")
        if not kind:
            raise SalesforceError(
                400, "INVALID_FIELD", "No type specified in the attributes of the record"
            )
        return self.sandbox.store.object(kind)

    def _collection(self, body: Any, apply: Callable[[dict[str, Any]], dict[str, Any]]) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "records: expected an array")
        records: list[dict[str, Any]] = body["records"]
        if len(records) > COLLECTION_LIMIT:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records "
                "into this call",
            )
        all_or_none = bool(body.get("allOrNone", False))
        store = self.sandbox.store
        before = store.snapshot() if all_or_none else None
        results: list[dict[str, Any]] = []
        for record in records:
            try:
                results.append(apply(dict(record)))
            except SalesforceError as error:
                failed = {"success": False, "errors": [error.collection_item()]}
                if record.get("Id"):
                    failed = {"id": record["Id"], **failed}
                results.append(failed)
        if before is not None and any(not r["success"] for r in results):
            store.restore(before)
            results = [_rolled_back(r) for r in results]
        return 200, results, {}

    # --------------------------------------------------------------- composite

    def do_composite(self, body: Any, user: str, version: str, **_: Any) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "compositeRequest: expected an array")
        requests: list[dict[str, Any]] = body["compositeRequest"]
        if len(requests) > COMPOSITE_LIMIT:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"Composite requests may contain at most {COMPOSITE_LIMIT} subrequests",
            )
        all_or_none = bool(body.get("allOrNone", False))
        store = self.sandbox.store
        before = store.snapshot()
        answers: dict[str, Any] = {}
        responses: list[dict[str, Any]] = []
        failed = False
        for sub in requests:
            reference = str(sub.get("referenceId", ""))
            if failed and all_or_none:
                responses.append(_halted(reference))
                continue
            status, payload, headers = self._subrequest(sub, answers, user)
            failed = failed or status >= 400
            if status < 400:
                answers[reference] = payload
            responses.append(
                {
                    "body": payload,
                    "httpHeaders": headers,
                    "httpStatusCode": status,
                    "referenceId": reference,
                }
            )
        if failed and all_or_none:
            store.restore(before)
            responses = [
                r if r["httpStatusCode"] >= 400 else _halted(r["referenceId"]) for r in responses
            ]
        # 200 even when everything was rolled back: the caller reads each httpStatusCode.
        return 200, {"compositeResponse": responses}, {}

    def _subrequest(self, sub: dict[str, Any], answers: dict[str, Any], user: str) -> Answer:
        try:
            url = _substitute(str(sub.get("url", "")), answers)
            body = json.loads(_substitute(json.dumps(sub.get("body")), answers))
            split = urlsplit(url)
            adapter = self.url_map.bind("sandbox")
            try:
                endpoint, args = adapter.match(split.path, method=str(sub.get("method", "GET")))
            except (NotFound, MethodNotAllowed) as exc:
                raise not_found() from exc
            if endpoint in ("token", "soap_login", "versions", "composite"):
                raise not_found()
            args = dict(args)
            version = str(args.pop("version"))
            params = {k: v[0] for k, v in parse_qs(split.query).items()}
            return self.dispatch(str(endpoint), args, body, params, user, version)
        except SalesforceError as error:
            return error.status, error.body(), {}

    # ------------------------------------------------------------------ OAuth

    def _token(self, request: Request) -> Response:
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id = request.authorization.username
            client_secret = request.authorization.password
        box = self.sandbox
        app = box.client_apps.get(client_id or "")
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "password"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if app is None or not hmac.compare_digest(app.client_secret, client_secret or ""):
            return _oauth_error("invalid_client", "invalid client credentials")
        if grant == "client_credentials":
            if app.run_as is None:
                return _oauth_error("invalid_grant", "no client credentials user enabled")
            user_id = app.run_as
        else:
            found = self._check_password(form.get("username", ""), form.get("password", ""))
            if found is None:
                return _oauth_error("invalid_grant", "authentication failure")
            user_id = found
        issued = str(int(time.time() * 1000))
        identity = f"{box.base_url}/id/{box.org_id}/{user_id}"
        signature = base64.b64encode(
            hmac.new(
                app.client_secret.encode(), f"{identity}{issued}".encode(), hashlib.sha256
            ).digest()
        ).decode()
        return _json(
            200,
            {
                "access_token": box.issue_token(user_id),
                "instance_url": box.base_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued,
                "signature": signature,
                "scope": "api",
            },
        )

    def _check_password(self, username: str, password: str) -> str | None:
        box = self.sandbox
        known = box.passwords.get(username.lower())
        if known is None or not hmac.compare_digest(known[0] + known[1], password):
            return None
        return box.user_by_email(username)

    def _soap_login(self, request: Request) -> Response:
        """The partner API `login` simple-salesforce sends for username + password +
        security token; answers the session id and server URL, or an INVALID_LOGIN fault."""
        try:
            root = ElementTree.fromstring(request.get_data())
        except (ParseError, DefusedXmlException):
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        texts = {el.tag.rsplit("}", 1)[-1]: el.text or "" for el in root.iter()}
        user_id = self._check_password(texts.get("username", ""), texts.get("password", ""))
        if user_id is None:
            return _soap_fault(
                "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
            )
        box = self.sandbox
        server = f"{box.base_url}/services/Soap/u/{box.api_version}/{box.org_id[:15]}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{escape(server)}</serverUrl>"
            f"<sessionId>{escape(box.issue_token(user_id))}</sessionId>"
            f"<userId>{user_id}</userId></result></loginResponse></soapenv:Body>"
            "</soapenv:Envelope>"
        )
        return Response(body, 200, content_type="text/xml; charset=utf-8")


def _weight(row: dict[str, Any]) -> int:
    children = [v for v in row.values() if isinstance(v, dict) and "records" in v]
    return 1 + sum(len(child["records"]) for child in children)


def _json_body(request: Request) -> Any:
    data = request.get_data()
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise SalesforceError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from exc


def _record_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SalesforceError(
            400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object"
        )
    return {k: v for k, v in body.items() if k != "attributes"}


def _rolled_back(result: dict[str, Any]) -> dict[str, Any]:
    if not result["success"]:
        return result
    error = {
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request "
        "was using AllOrNone header",
        "fields": [],
    }
    return {"id": None, "success": False, "errors": [error]}


def _halted(reference: str) -> dict[str, Any]:
    message = (
        "The transaction was rolled back since another operation in the same transaction failed."
    )
    return {
        "body": [{"errorCode": "PROCESSING_HALTED", "message": message}],
        "httpHeaders": {},
        "httpStatusCode": 400,
        "referenceId": reference,
    }


def _substitute(text: str, answers: dict[str, Any]) -> str:
    """Resolve `@{reference.path}` (e.g. `@{newAccount.id}`, `@{q.records[0].Id}`)."""

    def value(match: re.Match[str]) -> str:
        reference, path = match.group(1), match.group(2)
        if reference not in answers:
            raise SalesforceError(
                400,
                "PROCESSING_HALTED",
                f"Invalid reference specified. No value for {reference}.{path} found in "
                f"{reference}. Provided referenceId ({reference}) or path ({path}) is invalid.",
            )
        current: Any = answers[reference]
        for part in re.findall(r"[^.\[\]]+", path):
            current = current[int(part)] if part.isdigit() else current.get(part)
        return str(current)

    return _REFERENCE.sub(value, text)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if body is None:
        return Response(status=status, headers=headers or {})
    return Response(
        json.dumps(body),
        status=status,
        headers=headers or {},
        content_type="application/json;charset=UTF-8",
    )


def _oauth_error(code: str, description: str) -> Response:
    return _json(400, {"error": code, "error_description": description})


def _soap_fault(code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        f"<detail><sf:LoginFault><sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault>"
        "</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, 500, content_type="text/xml; charset=utf-8")
