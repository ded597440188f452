"""The Jira issue's description: the hand-off summary as an Atlassian Document (ADF).

REST API v3 takes rich text only as ADF, a JSON tree, so nothing in the text is ever
parsed as markup: a CRM value is one text node, whatever characters it holds. Its
`scheme://` is already broken by `inert`, so the only link is the deal's URL, which the
CRM connector built and which gets a real link mark.
"""

from __future__ import annotations

import json
from typing import Any

from kernel.text import inert

# Jira keeps at most 32,767 characters in a text field; the ADF JSON counts, so a deal
# with hundreds of contacts is cut to fit, with a last line saying so.
MAX_DOCUMENT_CHARS = 32_000
_ITEM_MARK = "- "

Node = dict[str, Any]


def description(summary: str, deal_url: str | None = None) -> Node:
    """`summary` (Fullkit's plain text, CRM values inert) as an ADF document.

    Lines indented by the summary become bullet lists, the line before them a bold
    heading; every other line is a paragraph.
    """
    lines = summary.replace("\r\n", "\n").split("\n")
    content = _blocks(lines, deal_url)
    document = _doc(content)
    if len(json.dumps(document)) <= MAX_DOCUMENT_CHARS:
        return document
    return _cut(content)


def _doc(content: list[Node]) -> Node:
    return {"type": "doc", "version": 1, "content": content}


def _blocks(lines: list[str], deal_url: str | None) -> list[Node]:
    blocks: list[Node] = []
    items: list[Node] = []
    for index, line in enumerate(lines):
        if line.startswith("  ") and line.strip():
            items.append(_item(line.strip().removeprefix(_ITEM_MARK)))
            continue
        if items:
            blocks.append({"type": "bulletList", "content": items})
            items = []
        if not line.strip():
            continue
        heads_list = index + 1 < len(lines) and lines[index + 1].startswith("  ")
        blocks.append(_paragraph(line, deal_url, strong=heads_list and line.endswith(":")))
    if items:
        blocks.append({"type": "bulletList", "content": items})
    return blocks


def _item(text: str) -> Node:
    return {"type": "listItem", "content": [_paragraph(text, None)]}


def _paragraph(line: str, deal_url: str | None, *, strong: bool = False) -> Node:
    text = inert(line, links=True)
    if deal_url and deal_url in text:
        before, _, after = text.partition(deal_url)
        link = {"type": "link", "attrs": {"href": deal_url}}
        nodes = [_text(before), _text(deal_url, link), _text(after)]
    else:
        nodes = [_text(text, {"type": "strong"} if strong else None)]
    return {"type": "paragraph", "content": [n for n in nodes if n["text"]]}


def _text(text: str, mark: Node | None = None) -> Node:
    node: Node = {"type": "text", "text": text}
    if mark is not None:
        node["marks"] = [mark]
    return node


def _cut(content: list[Node]) -> Node:
    """The longest head of the document that fits, and a line naming what was left out."""
    flat: list[Node] = []
    for block in content:
        if block["type"] == "bulletList":
            flat.extend({"type": "bulletList", "content": [item]} for item in block["content"])
        else:
            flat.append(block)
    kept: list[Node] = []
    size = len(json.dumps(_doc([]))) + 200  # room for the closing line
    for block in flat:
        size += len(json.dumps(block)) + 1
        if size > MAX_DOCUMENT_CHARS:
            break
        kept.append(block)
    left = len(flat) - len(kept)
    note = f"… {left} more line(s) did not fit in a Jira description: the deal has them all."
    return _doc(_merge_lists(kept) + [_paragraph(note, None)])


def _merge_lists(blocks: list[Node]) -> list[Node]:
    merged: list[Node] = []
    for block in blocks:
        if block["type"] == "bulletList" and merged and merged[-1]["type"] == "bulletList":
            merged[-1]["content"].extend(block["content"])
        else:
            merged.append({**block, "content": list(block["content"])})
    return merged
