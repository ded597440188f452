"""Loopback fakes of the CRMs, speaking their real wire formats over real HTTP.

HubSpot
-------
`HubSpotSandbox` is an in-memory portal as strict as the real one (undefined
properties, bad enumeration options, bad numbers/dates, missing required ticket and
task fields, unique-value conflicts, unknown ids, rate limits) and it sends signed
webhooks. `start_sandbox()` serves it::

    from sandbox import start_sandbox

    with start_sandbox() as running:          # running.url == "http://127.0.0.1:<port>"
        box = running.sandbox
        box.seed_default_portal()             # plan_tier, kickoff_date, ... and owners
        deal_id = box.create_deal(
            {"dealname": "Acme", "amount": "1500", "dealstage": "contractsent"},
            company={"name": "Acme", "domain": "acme.example"},
            contacts=[{"email": "bill@acme.example", "contact_role": "billing"}],
            line_items=[{"name": "Pro plan", "quantity": "1", "price": "1500"}],
            owner_email="sales-sam@example.com",
        )
        box.subscribe(receiver_url, client_secret="secret", app_id=box.app_id)
        box.move_deal(deal_id, "closedwon")   # signed deal.propertyChange webhook
        box.flush_webhooks(timeout=5)

Pointing hubspot-api-client (12.x) at it
----------------------------------------
Pass `host` (and `base_url`) to the `HubSpot` constructor. The client copies every
constructor keyword onto each generated API's `Configuration`, whose `host` setter
replaces the base URL of every typed call; `client.api_request(...)` (raw calls such
as `GET /account-info/v3/details`, which has no typed API) reads `base_url` instead::

    from hubspot import HubSpot

    client = HubSpot(access_token=token, host=running.url, base_url=running.url)
    client.crm.deals.basic_api.get_by_id("10001", associations=["companies"])
    client.api_request({"method": "GET", "path": "/account-info/v3/details"})

(`running.client()` does exactly this.) So the connector only has to build its client
as `HubSpot(access_token=settings.token, host=api_base, base_url=api_base)` with
`HUBSPOT_API_BASE` defaulting to `https://api.hubapi.com`. Note that every attribute
access such as `client.crm.deals.basic_api` builds a fresh `ApiClient` (and urllib3
pool) from `client.config`; keep the api objects you use rather than re-reading the
attribute chain on each call.

Facts a connector author can rely on (all mirrored from HubSpot)
----------------------------------------------------------------
* Every answer carries `X-HubSpot-RateLimit-Max`, `-Remaining`,
  `-Interval-Milliseconds` (except search answers, like HubSpot); over the limit
  (default 100 per 10 s per token) a 429 with `policyName` `TEN_SECONDLY_ROLLING`;
  search also has its own 5/s `SECONDLY` policy.
* Reads with `associations=` answer under `associations` keyed by the plural type,
  line items under `"line items"` (with a space); a primary company appears twice
  (`deal_to_company` and `deal_to_company_unlabeled`).
* Association type ids (HubSpot-defined, from hubspot-api-client's
  `hubspot/crm/association_type.py`): deal->contact 3, deal->company 341 (primary 5),
  deal->line item 19, deal->ticket 27, ticket->deal 28, ticket->company 339
  (primary 26), ticket->contact 16, deal->task 215, task->deal 216, task->contact
  204, task->company 192, task->ticket 230, contact->company 279 (primary 1).
* A custom property with `hasUniqueValue` refuses a value another record holds:
  400 `VALIDATION_ERROR`, message "Cannot set PropertyValueCoordinates{...} on ...
  <existing id> already has that value." (context.id = [existing id]). A duplicate
  contact email is a 409 `CONFLICT` "Contact already exists. Existing ID: <id>".
* Associations are paged: a read with `associations=` embeds the first 100 of each
  type with `paging.next.after`; a v4 batch association read gives each object a page
  of `association_batch_page` (500) with its own cursor, sent back as the input's
  `after`; `GET /crm/v4/objects/{type}/{id}/associations/{to}` takes `limit` (≤ 500)
  and `after`.
* A batch read asking for `propertiesWithHistory` refuses more than 50 inputs (400
  `VALIDATION_ERROR`).
* `fail_next(n, 423)` / `fail_next(n, 477, retry_after=...)` answer "locked" and
  "migration in progress"; `exhaust_daily_limit(n)` answers 429 `policyName` `DAILY`.
* `chaos = Chaos(error_rate=0.2, burst_every=20, burst_seconds=1, late_rate=0.02,
  late_seconds=6)` (`sandbox/hubspot_chaos.py`, off by default) answers a share of calls
  5xx, all calls 429 in periodic bursts, a share late (done, then answered after the
  client's timeout) and, with `slow_rate`, a share done only after that wait.
* Account details answer `uiDomain` = `ui_domain` (e.g. `app-eu1.hubspot.com`), else
  this server's host.
* `attach_file(deal_id, name, ext, via="notes"|"emails")` stores a file and a note or
  email on the deal whose `hs_attachment_ids` names it; `GET /files/v3/files/{id}`
  answers its metadata. Such files are hidden, so HubSpot's files search never lists
  them, and the sandbox serves no search.
* Tokens have scopes: by default exactly the `requiredScopes` of `hubspot-app/`'s app
  config (`add_token(..., scopes=...)`, `set_scopes` for others). Each route requires the
  scopes HubSpot requires (`sandbox/hubspot_scopes.py`, one line per route family); a
  missing one answers 403 `MISSING_SCOPES` naming it in `requiredGranularScopes`.
  `POST /oauth/v2/private-apps/get/access-token-info` tells a token its scopes.
* Search is eventually consistent when `search_lag_seconds` > 0.
* Webhook events are `deal.propertyChange` with `changeSource` `INTEGRATION` and
  `sourceId` = the app id for writes made with an app's token, `CRM_UI` for
  `move_deal`.
"""

from sandbox.hubspot import HubSpotSandbox, WriteSource
from sandbox.server import RunningSandbox, start_sandbox

__all__ = ["HubSpotSandbox", "RunningSandbox", "WriteSource", "start_sandbox"]
