"""A deal's attachments: the files on its notes and emails, for kits' `attachments`.

HubSpot keeps attachments as file ids in the engagement property `hs_attachment_ids`
(semicolon-separated); the files API knows their names. Read only when a kit uses
`attachments`: it costs an association read per engagement type, a batch read of the
engagements, and one read per file. Attachments of notes and emails are hidden files,
which the files search never lists, so each is read by its id (`files.ui_hidden.read`).
"""

from __future__ import annotations

from typing import Any

from connectors.hubspot_associations import batch_associations
from connectors.hubspot_client import BATCH_LIMIT, HubSpotApi, NotFoundError, chunks, results_of

ENGAGEMENTS = {"notes": "note", "emails": "email"}
ATTACHMENT_IDS = "hs_attachment_ids"


class Attachments:
    def __init__(self, api: HubSpotApi) -> None:
        self.api = api

    def of_deals(self, deal_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """{deal id: [canonical attachment]}, each file once, notes before emails."""
        refs: dict[str, list[tuple[str, str]]] = {deal_id: [] for deal_id in deal_ids}
        for kind, source in ENGAGEMENTS.items():
            links = batch_associations(self.api, "deals", kind, deal_ids)
            engagements = list(dict.fromkeys(t for targets in links.values() for t, _ in targets))
            files_of = self._file_ids(kind, engagements)
            for deal_id, targets in links.items():
                for engagement, _types in targets:
                    refs.setdefault(deal_id, []).extend(
                        (file_id, source) for file_id in files_of.get(engagement, [])
                    )
        wanted = list(dict.fromkeys(file_id for pairs in refs.values() for file_id, _ in pairs))
        files = self._files(wanted)
        found: dict[str, list[dict[str, Any]]] = {}
        for deal_id, pairs in refs.items():
            seen: set[str] = set()
            found[deal_id] = []
            for file_id, source in pairs:
                if file_id in files and file_id not in seen:
                    seen.add(file_id)
                    found[deal_id].append({**files[file_id], "source": source})
        return found

    def _file_ids(self, kind: str, engagements: list[str]) -> dict[str, list[str]]:
        api = self.api
        batch_api = getattr(api.client.crm.objects, kind).batch_api
        found: dict[str, list[str]] = {}
        for part in chunks(engagements, BATCH_LIMIT):
            answer = api.call(
                f"batch read {kind}",
                batch_api.read,
                {
                    "inputs": [{"id": engagement} for engagement in part],
                    "properties": [ATTACHMENT_IDS],
                    "propertiesWithHistory": [],
                },
            )
            for result in results_of(answer):
                raw = str((result.get("properties") or {}).get(ATTACHMENT_IDS) or "")
                ids = [piece.strip() for piece in raw.split(";") if piece.strip().isdigit()]
                found[str(result.get("id"))] = ids
        return found

    def _files(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        api = self.api
        files_api = api.client.files.files_api
        found: dict[str, dict[str, Any]] = {}
        for file_id in ids:
            try:
                result = api.call("read file", files_api.get_by_id, file_id)
            except NotFoundError:
                continue  # deleted since it was attached: not an attachment any more
            if isinstance(result, dict) and not result.get("archived"):
                found[file_id] = canonical_file(result)
        return found


def canonical_file(raw: dict[str, Any]) -> dict[str, Any]:
    """HubSpot's file metadata -> the canonical attachment fields; empty ones left out."""
    values: dict[str, Any] = {
        "name": raw.get("name"),
        "extension": raw.get("extension"),
        "type": raw.get("type"),
        "url": raw.get("url"),
    }
    size = raw.get("size")
    if isinstance(size, int | float) and not isinstance(size, bool):
        values["size"] = float(size)
    return {key: value for key, value in values.items() if value not in (None, "")}
