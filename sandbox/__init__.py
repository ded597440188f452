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

Salesforce
----------
`SalesforceSandbox` is an in-memory org (Opportunity with Fullkit's custom fields,
Account, Contact, OpportunityContactRole, OpportunityLineItem with Product2 and
PricebookEntry, files as ContentVersion/ContentDocument/ContentDocumentLink, field
history, User, Task, Case with the external id `Fullkit_Handoff_Id__c`, and a
configurable custom object, `Onboarding__c` by default). `start_salesforce_sandbox()`
serves it::

    from sandbox import start_salesforce_sandbox

    with start_salesforce_sandbox() as running:
        box = running.sandbox
        box.seed_default_org()                # users, Plan__c, Kickoff_Date__c, roles
        opp = box.create_opportunity(
            {"Name": "Acme", "StageName": "Negotiation/Review", "Amount": 1500},
            account={"Name": "Acme"},
            contacts=[{"LastName": "Bill", "Email": "bill@acme.example", "Role": "Billing"}],
            line_items=[{"Name": "Pro plan", "Quantity": 1, "UnitPrice": 1500}],
            files=[("Signed order form", "pdf")],
            owner_email="sales-sam@example.com",
        )
        box.add_outbound_message(receiver_url, stages=["Closed Won"])
        box.move_opportunity(opp, "Closed Won")   # the Flow queues a notification
        box.deliver_outbound()                    # POSTs it; kept until Acked

Pointing simple-salesforce (1.12) at it
---------------------------------------
simple-salesforce always builds `https://` URLs (`https://<domain>.salesforce.com` for
the token, `https://<instance>` after it), so hand it `running.session()`, a requests
session that sends every URL to the loopback server::

    Salesforce(instance_url=running.url, session_id=token, session=running.session())
    Salesforce(consumer_key=..., consumer_secret=..., domain="acme.my",
               session=running.session())   # client credentials (External Client App)
    Salesforce(username=..., password=..., security_token=..., session=...)  # SOAP login

(`running.client()` is the first, on the integration user's session.)

Facts a connector author can rely on (all mirrored from Salesforce)
-------------------------------------------------------------------
* Errors are a JSON list `[{"message", "errorCode", "fields"}]`: INVALID_FIELD for a
  field the org lacks (`remove_field`), INVALID_FIELD_FOR_INSERT_UPDATE for one the user
  may not write (`restrict_field`), INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST for a bad
  StageName or Fullkit_Status__c, REQUIRED_FIELD_MISSING, DUPLICATE_VALUE on an
  external-id clash, NOT_FOUND, MALFORMED_QUERY / INVALID_TYPE for SOQL it cannot run.
* `expire_session()` makes the next call a 401 INVALID_SESSION_ID; the daily limit
  (`set_daily_api_limit`) answers 403 REQUEST_LIMIT_EXCEEDED once spent; every API
  answer carries `Sforce-Limit-Info: api-usage=used/max`. A composite request counts
  as one call. `calls()` lists every request.
* Queries page at 2,000 records, children counted; a parent with more than 200
  children of one subquery gets the first 200 and a `nextRecordsUrl` for the rest.
  No children is `null`, not an empty list. A URI over 16,384 bytes is a 414 (so
  long `IN` lists must be cut, or sent inside `composite`); a filter value of the
  wrong kind (a quoted date, an Id that is no id) is refused, not left unmatched.
* Upsert by external id answers 201 (created) or 200 with `"created": false` (API
  46.0 and later; 204 before). sObject Collections answer 200 with one result per
  record, `statusCode` in their errors; `composite` answers 200 even when `allOrNone`
  rolled everything back (PROCESSING_HALTED in the other sub-responses).
* Outbound messages read the record at delivery time, hold up to 100 notifications,
  stay queued until the endpoint answers 200 with the `Ack` true envelope, and
  `redeliver` sends one again as Salesforce sometimes does. The Flow fires on any save
  that changes StageName into one of its stages, whoever saves.
"""

from sandbox.hubspot import HubSpotSandbox, WriteSource
from sandbox.salesforce import SalesforceSandbox
from sandbox.server import (
    RunningSalesforceSandbox,
    RunningSandbox,
    start_salesforce_sandbox,
    start_sandbox,
)

__all__ = [
    "HubSpotSandbox",
    "RunningSalesforceSandbox",
    "RunningSandbox",
    "SalesforceSandbox",
    "WriteSource",
    "start_salesforce_sandbox",
    "start_sandbox",
]
