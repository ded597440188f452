"""A record's associations, every page of them.

HubSpot pages associations per object: an object read embeds the first 100 of each type,
a v4 batch read gives each object one page with its own cursor, and the v4 list endpoint
serves up to 500 a page. A page left unread is a contact the kit never sees, or a
return task not found and so created twice.
"""

from __future__ import annotations

from typing import Any

from connectors.hubspot_client import HubSpotApi, chunks, next_after, results_of

LIST_LIMIT = 500  # the v4 list endpoint's largest page

Targets = list[tuple[str, set[int]]]  # [(to id, association type ids)], in HubSpot's order


def associations_of(api: HubSpotApi, from_type: str, object_id: str, to_type: str) -> Targets:
    """All of one object's associations to one type, through the v4 list endpoint."""
    found: Targets = []
    after: str | None = None
    seen: set[str] = set()
    while True:
        options: dict[str, Any] = {"limit": LIST_LIMIT}
        if after is not None:
            options["after"] = after
        answer = api.call(
            f"list {from_type} to {to_type} associations",
            api.client.crm.associations.v4.basic_api.get_page,
            from_type,
            object_id,
            to_type,
            **options,
        )
        found.extend(_target(row) for row in results_of(answer))
        after = next_after(answer)
        if after is None or after in seen:  # a repeated cursor would loop for ever
            return found
        seen.add(after)


def batch_associations(
    api: HubSpotApi, from_type: str, to_type: str, ids: list[str]
) -> dict[str, Targets]:
    """{from id: every associated to id}, following each object's own cursor."""
    found: dict[str, Targets] = {}
    pending: list[dict[str, str]] = [{"id": object_id} for object_id in ids]
    seen: set[tuple[str, str]] = set()
    while pending:
        later: list[dict[str, str]] = []
        for part in chunks(pending):
            # Objects without associations come back as per-item errors (207): no failure.
            answer = api.call(
                f"read {from_type} to {to_type} associations",
                api.client.crm.associations.v4.batch_api.get_page,
                from_type,
                to_type,
                {"inputs": part},
            )
            for result in results_of(answer):
                source = str((result.get("from") or {}).get("id"))
                found.setdefault(source, []).extend(
                    _target(row) for row in result.get("to") or [] if isinstance(row, dict)
                )
                after = next_after(result)
                if after is not None and (source, after) not in seen:
                    seen.add((source, after))
                    later.append({"id": source, "after": after})
        pending = later
    return found


def _target(row: dict[str, Any]) -> tuple[str, set[int]]:
    types = {
        int(kind["typeId"])
        for kind in row.get("associationTypes") or []
        if isinstance(kind, dict) and str(kind.get("typeId", "")).isdigit()
    }
    return str(row.get("toObjectId")), types
