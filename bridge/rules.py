"""The rules folder (kit_rules/): kits and field mappings, validated as a whole.

Every problem is reported at once, as `file:line: path: problem`, so revops can fix a
folder in one pass; the service refuses to start on an invalid folder.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from bridge.expressions import (
    FIELD_PATH,
    CelSyntaxError,
    Expression,
    Schema,
    check_expression,
    compile_expression,
)
from bridge.yaml_errors import explain
from kernel.connector import OpsTarget, Registry
from kernel.mapping import FIELD_TYPES, OBJECTS, FieldSpec, Mapping, convert
from kernel.packet import Packet

KNOWN_CRMS = ("hubspot", "salesforce")
YAML_SUFFIXES = (".yaml", ".yml")
KIT_KEYS = (
    "kit",
    "title",
    "crm",
    "applies_when",
    "handoff_stage",
    "return_stage",
    "ops",
    "requirements",
)
KIT_REQUIRED = ("kit", "title", "handoff_stage", "ops", "requirements")
REQUIREMENT_KEYS = ("id", "check", "field", "when", "message")
OPS_KEYS = ("target", "owners", "kickoff_within_days")
MAPPING_KEYS = ("crm", "stages", *OBJECTS)
FIELD_KEYS = ("property", "type")
DEFAULT_KICKOFF_DAYS = 5
ROOT = "(top level)"
UNTYPED = "?"  # a mapped field whose type is invalid; only in an invalid folder
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        # A problem with a folder (line 0) has no line or path to point at.
        if self.line == 0:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class RulesError(Exception):
    """An invalid rules folder; str() lists every problem, one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass(frozen=True)
class Requirement:
    id: str
    message: str
    field: str | None = None  # shorthand: the path must be present and not empty
    check: Expression | None = None
    when: Expression | None = None

    def uses(self, variable: str) -> bool:
        """Whether its field, check or `when` may read `variable`."""
        return _mentions([self.field, _text(self.check), _text(self.when)], variable)

    def when_uses(self, variable: str) -> bool:
        """Whether deciding if it applies may read `variable`."""
        return _mentions([_text(self.when)], variable)


def _text(expression: Expression | None) -> str | None:
    return expression.source if expression is not None else None


def _mentions(texts: list[str | None], variable: str) -> bool:
    # A mention inside a string literal errs on the side of reading.
    word = re.compile(rf"\b{re.escape(variable)}\b")
    return any(word.search(text) for text in texts if text)


@dataclass(frozen=True)
class OpsSpec:
    target: str
    owners: tuple[str, ...] = ()
    kickoff_within_days: int = DEFAULT_KICKOFF_DAYS
    options: dict[str, Any] = field(default_factory=dict)  # the target's own keys


@dataclass(frozen=True)
class Kit:
    id: str
    title: str
    crm: str | None
    applies_when: Expression | None
    handoff_stage: str
    return_stage: str | None
    ops: OpsSpec
    requirements: tuple[Requirement, ...]
    source: str = ""  # the file it came from, for messages

    def uses(self, variable: str) -> bool:
        """Whether any of the kit's expressions or fields may read `variable`.

        A connector reads costly parts of a deal (attachments) only for deals whose kit
        needs them (`bridge.evaluator.needs`).
        """
        return self.chooser_uses(variable) or any(r.uses(variable) for r in self.requirements)

    def chooser_uses(self, variable: str) -> bool:
        """Whether deciding if the kit applies may read `variable`."""
        return _mentions([_text(self.applies_when)], variable)


@dataclass(frozen=True)
class Rules:
    kits: tuple[Kit, ...]  # files in name order: the first matching kit wins
    mappings: dict[str, Mapping]

    def kit_by_id(self, kit_id: str) -> Kit | None:
        return next((kit for kit in self.kits if kit.id == kit_id), None)

    def kits_for(self, crm: str) -> tuple[Kit, ...]:
        return tuple(kit for kit in self.kits if kit.crm in (None, crm))

    def kits_entered(self, crm: str, stage_ref: str) -> list[Kit]:
        """The kits that may judge a deal of this CRM entering this stage (the CRM's id or
        name): those whose hand-off stage it is. The hand-off and the backtest both pick
        from these."""
        mapping = self.mappings.get(crm)
        entered = mapping.canonical_stage(stage_ref) if mapping is not None else None
        return [kit for kit in self.kits if entered is not None and kit.handoff_stage == entered]

    def handoff_stage_refs(self, crm: str) -> set[str]:
        """The CRM's ids/names of every hand-off stage a kit for this CRM watches."""
        mapping = self.mappings.get(crm)
        if mapping is None:
            return set()
        return {mapping.stage_ref(kit.handoff_stage) for kit in self.kits_for(crm)}

    def packet_from_json(self, data: Any, *, default_crm: str = "hubspot") -> Packet:
        return packet_from_json(data, self.mappings, default_crm=default_crm)


# What a kit may check of each attachment, e.g. `attachments.exists(a, a.name.contains("order
# form") && a.extension == "pdf")`; `source` is where it was attached ("note", "email").
ATTACHMENT_FIELDS = {
    "name": "string",
    "extension": "string",
    "type": "string",
    "url": "string",
    "size": "number",
    "source": "string",
}


def schema_for(mapping: Mapping) -> Schema:
    """The canonical fields kit expressions may use with this mapping."""
    fields = {obj: {spec.name: spec.type for spec in mapping.fields(obj)} for obj in OBJECTS}
    # Every contact has a role (Salesforce always; HubSpot through a mapped property).
    fields["contact"].setdefault("role", "string")
    # Attachments are canonical already (the CRM's connector fills them), not mapped.
    fields["attachment"] = dict(ATTACHMENT_FIELDS)
    return Schema(fields)


def load_rules(path: Path, registry: Registry | None = None) -> Rules:
    """Load and validate a rules folder; raise RulesError listing every problem.

    The caller passes the registry of connectors it runs, so kits are checked against
    those ops targets (and their keys) and CRMs. Without one (the web process, which runs
    no connector and needs only the hand-off stages), ops targets are not checked.
    """
    return _Loader(Path(path), registry).load()


def display_path(path: Path) -> str:
    """A file as problems name it: relative to the current directory when it lies under
    it, absolute otherwise, so the user can paste it into an editor from where they are."""
    cwd = Path.cwd()
    for candidate, base in ((path.absolute(), cwd), (path.resolve(), cwd.resolve())):
        if candidate.is_relative_to(base):
            return str(candidate.relative_to(base))
    return str(path.resolve())


# --- YAML with line numbers ----------------------------------------------------------


class _File:
    """One YAML file being checked: its display name and where problems go."""

    def __init__(self, display: str, problems: list[Problem]) -> None:
        self.display = display
        self.problems = problems
        self._constructor = SafeConstructor()

    def problem(self, node: yaml.Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(Problem(self.display, line, path, message))

    def value(self, node: yaml.Node) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problem(node, "yaml", f"YAML error: {exc.problem}")
            return None

    def describe(self, node: yaml.Node) -> str:
        return _kind(node, self.value(node) if isinstance(node, yaml.ScalarNode) else None)

    def compose(self, path: Path) -> yaml.Node | None:
        try:
            text = path.read_text(encoding="utf-8")
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            cause = explain(text, exc)
            self.problems.append(Problem(self.display, cause.line, "yaml", cause.message))
            return None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            self.problem(None, "yaml", f"cannot read: {exc}")
            return None
        if node is None:
            self.problem(None, ROOT, "the file is empty")
        return node

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None
    ) -> dict[str, _Entry]:
        """Key -> entry; unknown keys (when `allowed` is given) and duplicates reported."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, path or ROOT, f"must be a mapping, got {self.describe(node)}")
            return {}
        entries: dict[str, _Entry] = {}
        for key_node, value_node in node.value:
            key = self.value(key_node)
            where = _join(path, str(key))
            if not isinstance(key, str):
                self.problem(key_node, where, "keys must be strings")
            elif key in entries:
                first = entries[key].key.start_mark.line + 1
                self.problem(key_node, where, f"duplicate key (first at line {first})")
            elif allowed is not None and key not in allowed:
                self.problem(key_node, where, _unknown_key(key, allowed))
            else:
                entries[key] = _Entry(key_node, value_node, where)
        return entries

    def required(
        self, node: yaml.Node, entries: dict[str, _Entry], path: str, keys: tuple[str, ...]
    ) -> None:
        for key in keys:
            if key not in entries:
                self.problem(node, _join(path, key), "required key is missing")

    def string(self, entry: _Entry | None) -> str | None:
        """A non-empty string value, else a problem and None."""
        if entry is None:
            return None
        value = self.value(entry.value) if isinstance(entry.value, yaml.ScalarNode) else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        got = "an empty string" if isinstance(value, str) else _kind(entry.value, value)
        self.problem(entry.value, entry.path, f"must be a non-empty string, got {got}")
        return None


@dataclass(frozen=True)
class _Entry:
    key: yaml.Node
    value: yaml.Node
    path: str


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(node: yaml.Node, value: Any = None) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if value is None and node.tag.endswith(":null"):
        return "nothing (null)"
    name = type(value).__name__ if value is not None else node.tag.rsplit(":", 1)[-1]
    return f"{name} {node.value!r}"


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
    return f"unknown key ({hint})"


# --- the folder ----------------------------------------------------------------------


class _Loader:
    def __init__(self, root: Path, registry: Registry | None) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.mappings: dict[str, Mapping] = {}
        self.mapping_files: dict[str, str] = {}  # crm -> the file its mapping came from
        self.schemas: dict[str, Schema] = {}
        self.kit_ids: dict[str, str] = {}  # kit id -> "file:line" of its first definition
        self.targets = registry.targets if registry is not None else None
        self.crms = tuple(sorted(set(KNOWN_CRMS) | set(registry.crms if registry else ())))

    def load(self) -> Rules:
        if not self.root.is_dir():
            raise RulesError(
                [
                    Problem(
                        display_path(self.root),
                        0,
                        ROOT,
                        "rules folder not found (set FULLKIT_RULES_DIR)",
                    )
                ]
            )
        for path in self._files("mappings"):
            self._load_mapping(path)
        kits = [kit for path in self._files("kits") if (kit := self._load_kit(path))]
        if self.problems:
            raise RulesError(sorted(self.problems, key=lambda p: (p.file, p.line)))
        return Rules(kits=tuple(kits), mappings=dict(self.mappings))

    def _files(self, folder: str) -> list[Path]:
        """The folder's YAML files in name order (.yaml and .yml alike). Anything else in it
        is a problem, not skipped: a kit saved as .json or left as .yaml.bak would otherwise
        look active to whoever wrote it while the service runs without it. Hidden files
        (.gitkeep, editor swap files, .DS_Store) are never meant as rules."""
        where = self.root / folder
        entries = sorted(where.iterdir()) if where.is_dir() else []
        files: list[Path] = []
        for path in entries:
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in YAML_SUFFIXES:
                files.append(path)
                continue
            kind = "a folder" if path.is_dir() else "not a .yaml or .yml file"
            message = f"{kind}, so not read: rename it to .yaml or move it out of {folder}/"
            self.problems.append(Problem(display_path(path), 1, ROOT, message))
        if not files:
            message = f"no {folder} found ({folder}/*.yaml or *.yml)"
            self.problems.append(Problem(display_path(where), 0, ROOT, message))
        return files

    def _file(self, path: Path) -> _File:
        return _File(display_path(path), self.problems)

    def known_crm(self, f: _File, entry: _Entry, crm: str) -> bool:
        if crm in self.crms:
            return True
        f.problem(entry.value, entry.path, f"unknown crm '{crm}' (known: {', '.join(self.crms)})")
        return False

    # --- mappings

    def _load_mapping(self, path: Path) -> None:
        f = self._file(path)
        node = f.compose(path)
        if node is None:
            return
        if not isinstance(node, yaml.MappingNode):
            f.problem(node, ROOT, f"a mapping file must be a mapping, got {f.describe(node)}")
            return
        entries = f.mapping(node, "", MAPPING_KEYS)
        f.required(node, entries, "", ("crm",))
        crm = f.string(entries.get("crm"))
        if crm is not None and self.known_crm(f, entries["crm"], crm) and crm != path.stem:
            message = f"'{crm}' does not match the file name {path.name}"
            f.problem(entries["crm"].value, "crm", message)
        crm = crm or path.stem
        stages = self._stages(f, entries.get("stages"))
        objects = {obj: self._fields(f, entries[obj]) for obj in OBJECTS if obj in entries}
        if crm in self.mappings:
            message = f"a second mapping for crm '{crm}' (the first is {self.mapping_files[crm]})"
            where = entries.get("crm")
            f.problem(where.key if where else node, "crm" if where else ROOT, message)
            return
        self.mapping_files[crm] = f.display
        self.mappings[crm] = Mapping(crm=crm, stages=stages, **objects)
        self.schemas[crm] = schema_for(self.mappings[crm])

    def _stages(self, f: _File, entry: _Entry | None) -> dict[str, str]:
        if entry is None:
            return {}
        stages: dict[str, str] = {}
        for name, item in f.mapping(entry.value, "stages", None).items():
            value = f.value(item.value) if isinstance(item.value, yaml.ScalarNode) else None
            # Unquoted numeric stage ids (custom HubSpot pipelines) are still ids.
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
                stages[name] = str(value).strip()
            else:
                got = _kind(item.value, value)
                f.problem(item.value, item.path, f"must be a CRM stage id or name, got {got}")
        return stages

    def _fields(self, f: _File, entry: _Entry) -> tuple[FieldSpec, ...]:
        specs = []
        for name, item in f.mapping(entry.value, entry.path, None).items():
            if not _NAME.match(name):
                message = "a field name must be a letter or _ then letters, digits or _"
                f.problem(item.key, item.path, message)
                continue
            specs.append(self._field(f, name, item))
        return tuple(specs)

    def _field(self, f: _File, name: str, item: _Entry) -> FieldSpec:
        """A field spec; a broken one still names a field, so a typo in the mapping does not
        flood kits with "unknown field" (its type is UNTYPED: expressions are not type
        checked where they use it)."""
        if isinstance(item.value, yaml.ScalarNode):
            prop = f.string(item)
            return FieldSpec(name, prop or name)
        entries = f.mapping(item.value, item.path, FIELD_KEYS)
        if not isinstance(item.value, yaml.MappingNode):
            return FieldSpec(name, name, UNTYPED)
        f.required(item.value, entries, item.path, ("property",))
        prop = f.string(entries.get("property")) or name
        kind = f.string(entries["type"]) if "type" in entries else "string"
        if kind is not None and kind not in FIELD_TYPES:
            message = f"unknown type '{kind}' (known: {', '.join(FIELD_TYPES)})"
            f.problem(entries["type"].value, entries["type"].path, message)
        return FieldSpec(name, prop, kind if kind in FIELD_TYPES else UNTYPED)

    # --- kits

    def _load_kit(self, path: Path) -> Kit | None:
        before = len(self.problems)
        f = self._file(path)
        node = f.compose(path)
        if node is None:
            return None
        if not isinstance(node, yaml.MappingNode):
            f.problem(node, ROOT, f"a kit must be a mapping, got {f.describe(node)}")
            return None
        entries = f.mapping(node, "", KIT_KEYS)
        f.required(node, entries, "", KIT_REQUIRED)
        kit = _KitParser(self, f, entries).parse()
        return kit if len(self.problems) == before else None

    def note_kit_id(self, f: _File, entry: _Entry, kit_id: str) -> None:
        where = f"{f.display}:{entry.value.start_mark.line + 1}"
        if kit_id in self.kit_ids:
            message = f"duplicate kit id '{kit_id}' (also at {self.kit_ids[kit_id]})"
            f.problem(entry.value, entry.path, message)
        else:
            self.kit_ids[kit_id] = where


class _KitParser:
    """Checks one kit file's entries against the folder's mappings and targets."""

    def __init__(self, loader: _Loader, f: _File, entries: dict[str, _Entry]) -> None:
        self.loader = loader
        self.f = f
        self.entries = entries
        self.schemas: dict[str, Schema] = {}  # crm -> schema this kit is checked against
        self.crm: str | None = None  # the kit's own `crm`, once read

    def parse(self) -> Kit | None:
        f, entries = self.f, self.entries
        kit_id = self._id(entries.get("kit"))
        if kit_id is not None:
            self.loader.note_kit_id(f, entries["kit"], kit_id)
        title = f.string(entries.get("title"))
        crm = self.crm = self._crm(entries.get("crm"))
        applies_when = self._expression(entries.get("applies_when"))
        handoff = self._stage(entries.get("handoff_stage"))
        return_stage = self._stage(entries.get("return_stage"))
        ops = self._ops(entries.get("ops"))
        requirements = self._requirements(entries.get("requirements"))
        if kit_id is None or title is None or handoff is None:
            return None
        if ops is None or requirements is None:
            return None
        return Kit(
            kit_id, title, crm, applies_when, handoff, return_stage, ops, requirements, f.display
        )

    def _id(self, entry: _Entry | None) -> str | None:
        value = self.f.string(entry)
        if entry is not None and value is not None and not _ID.match(value):
            self.f.problem(
                entry.value, entry.path, "an id must be letters, digits, '-', '_' or '.'"
            )
            return None
        return value

    def _crm(self, entry: _Entry | None) -> str | None:
        """The kit's CRM; also picks the mappings its stages and fields are checked against."""
        if entry is None:
            self.schemas = dict(self.loader.schemas)
            return None
        crm = self.f.string(entry)
        if crm is None or not self.loader.known_crm(self.f, entry, crm):
            return None
        if crm not in self.loader.mappings:
            message = f"no field mapping for crm '{crm}' (mappings/{crm}.yaml)"
            self.f.problem(entry.value, entry.path, message)
        else:
            self.schemas = {crm: self.loader.schemas[crm]}
        return crm

    def _stage(self, entry: _Entry | None) -> str | None:
        stage = self.f.string(entry)
        if entry is None or stage is None:
            return stage
        for crm in self.schemas:
            stages = self.loader.mappings[crm].stages
            if stage not in stages:
                known = ", ".join(stages) or "none"
                message = f"unknown stage '{stage}' in mappings/{crm}.yaml (known: {known})"
                self.f.problem(entry.value, entry.path, message)
        return stage

    def _expression(self, entry: _Entry | None) -> Expression | None:
        source = self.f.string(entry)
        if entry is None or source is None:
            return None
        try:
            expr = compile_expression(source)
        except CelSyntaxError as exc:
            self.f.problem(entry.value, entry.path, str(exc))
            return None
        for message in self._schema_messages(lambda schema: check_expression(expr, schema)):
            self.f.problem(entry.value, entry.path, message)
        return expr

    def _schema_messages(self, check: Callable[[Schema], list[str]]) -> list[str]:
        """Messages from checking against each applicable mapping, said once each."""
        messages: list[str] = []
        for crm, schema in self.schemas.items():
            suffix = f" [crm {crm}]" if len(self.schemas) > 1 else ""
            for message in check(schema):
                if message not in messages and message + suffix not in messages:
                    messages.append(message + suffix)
        return messages

    # --- ops

    def _ops(self, entry: _Entry | None) -> OpsSpec | None:
        if entry is None:
            return None
        entries = self.f.mapping(entry.value, "ops", None)
        if not isinstance(entry.value, yaml.MappingNode):
            return None
        self.f.required(entry.value, entries, "ops", ("target",))
        target = self.f.string(entries.get("target"))
        owners = self._owners(entries.get("owners"))
        days = self._days(entries.get("kickoff_within_days"))
        options = {k: self.f.value(item.value) for k, item in entries.items() if k not in OPS_KEYS}
        if target is None or not self._target_ok(entries["target"], options, entries):
            return None
        if owners is None or days is None:
            return None
        return OpsSpec(target, owners, days, options)

    def _target_ok(
        self, entry: _Entry, options: dict[str, Any], entries: dict[str, _Entry]
    ) -> bool:
        target = self.f.value(entry.value)
        if self.loader.targets is None:
            return True
        cls = self.loader.targets.get(target)
        if cls is None:
            known = ", ".join(sorted(self.loader.targets)) or "none"
            message = f"unknown ops target '{target}' (known: {known})"
            self.f.problem(entry.value, entry.path, message)
            return False
        if not self._target_serves(cls, entry):
            return False
        problems = cls.validate_options(options)
        for text in problems:
            # Targets say "<key>: problem"; point at that key's line when we can.
            key, sep, message = text.partition(": ")
            item = entries.get(key) if sep else None
            if item is not None:
                self.f.problem(item.key, item.path, message)
            else:
                self.f.problem(entry.value, "ops", text)
        return not problems

    def _target_serves(self, cls: type[OpsTarget], entry: _Entry) -> bool:
        """A kit's deals must be ones its target can take: a Case needs a Salesforce
        opportunity, a HubSpot ticket a HubSpot deal. A kit without `crm` judges the deals
        of every mapped CRM, so its target must serve them all."""
        unserved = [crm for crm in self.schemas if not cls.serves(crm)]
        if not unserved:
            return True
        served = ", ".join(sorted(cls.crms or ())) or "none"
        if self.crm is None:
            message = (
                f"ops target '{cls.name}' serves only {served} deals, but this kit has no "
                f"`crm` and would also judge {', '.join(unserved)} deals; add `crm: {served}`"
            )
        else:
            message = f"ops target '{cls.name}' cannot serve {self.crm} deals (serves {served})"
        self.f.problem(entry.value, entry.path, message)
        return False

    def _owners(self, entry: _Entry | None) -> tuple[str, ...] | None:
        if entry is None:
            return ()
        if not isinstance(entry.value, yaml.SequenceNode):
            got = self.f.describe(entry.value)
            self.f.problem(entry.value, entry.path, f"must be a list of email addresses, got {got}")
            return None
        owners: list[str | None] = []
        for i, item in enumerate(entry.value.value):
            owner = self.f.string(_Entry(item, item, _join(entry.path, i)))
            if owner is not None and "@" not in owner:
                self.f.problem(item, _join(entry.path, i), f"'{owner}' is not an email address")
                owner = None
            owners.append(owner)
        return None if None in owners else tuple(o for o in owners if o)

    def _days(self, entry: _Entry | None) -> int | None:
        if entry is None:
            return DEFAULT_KICKOFF_DAYS
        value = self.f.value(entry.value)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 365:
            return value
        got = _kind(entry.value, value)
        message = f"must be a whole number of business days (0-365), got {got}"
        self.f.problem(entry.value, entry.path, message)
        return None

    # --- requirements

    def _requirements(self, entry: _Entry | None) -> tuple[Requirement, ...] | None:
        if entry is None:
            return None
        if not isinstance(entry.value, yaml.SequenceNode):
            got = self.f.describe(entry.value)
            self.f.problem(entry.value, entry.path, f"must be a list of requirements, got {got}")
            return None
        seen: dict[str, int] = {}
        parsed = [
            self._requirement(item, _join(entry.path, i), seen)
            for i, item in enumerate(entry.value.value)
        ]
        return None if None in parsed else tuple(r for r in parsed if r)

    def _requirement(self, node: yaml.Node, path: str, seen: dict[str, int]) -> Requirement | None:
        entries = self.f.mapping(node, path, REQUIREMENT_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None
        self.f.required(node, entries, path, ("id", "message"))
        req_id = self._id(entries.get("id"))
        if req_id is not None:
            self._note_requirement_id(entries["id"], req_id, seen)
        if ("check" in entries) == ("field" in entries):
            self.f.problem(node, path, "needs exactly one of 'check' or 'field'")
        message = self.f.string(entries.get("message"))
        field_path = self._field(entries.get("field"))
        check = self._expression(entries.get("check"))
        when = self._expression(entries.get("when"))
        if req_id is None or message is None or (check is None and field_path is None):
            return None
        return Requirement(req_id, message, field_path, check, when)

    def _note_requirement_id(self, entry: _Entry, req_id: str, seen: dict[str, int]) -> None:
        if req_id in seen:
            message = f"duplicate requirement id '{req_id}' (first at line {seen[req_id]})"
            self.f.problem(entry.value, entry.path, message)
        seen.setdefault(req_id, entry.value.start_mark.line + 1)

    def _field(self, entry: _Entry | None) -> str | None:
        path = self.f.string(entry)
        if entry is None or path is None:
            return None
        match = FIELD_PATH.match(path)
        if match is None:
            message = "must be deal.<field>, company.<field>, contacts, line_items or attachments"
            self.f.problem(entry.value, entry.path, message)
            return None
        obj, name, _ = match.groups()
        if obj:
            for message in self._schema_messages(lambda schema: _field_problem(schema, obj, name)):
                self.f.problem(entry.value, entry.path, message)
        return path


def _field_problem(schema: Schema, obj: str, name: str) -> list[str]:
    known = schema.known(obj)
    if name in known:
        return []
    return [f"unknown {obj} field '{name}' (known: {', '.join(sorted(known)) or 'none'})"]


# --- deal files for `fullkit kit check --deal FILE.json` -----------------------------

_PACKET_KEYS = (
    "crm",
    "deal_id",
    "name",
    "deal",
    "company",
    "contacts",
    "line_items",
    "attachments",
)


def packet_from_json(
    data: Any,
    mappings: MappingABC[str, Mapping] | Rules | None = None,
    *,
    default_crm: str = "hubspot",
) -> Packet:
    """A packet from canonical JSON maps (`fullkit kit check --deal FILE.json`).

    With mappings (or Rules), values are typed by the crm's mapping and unknown fields
    are refused; without, types are inferred from the JSON (numbers, "YYYY-MM-DD" dates,
    ISO 8601 datetimes). Raises ValueError with one line naming the offending key.
    """
    if not isinstance(data, dict):
        raise ValueError("a deal file must hold a JSON object")
    unknown = [key for key in data if key not in _PACKET_KEYS]
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}' (expected: {', '.join(_PACKET_KEYS)})")
    crm = data.get("crm", default_crm)
    schema = _json_schema(crm, mappings.mappings if isinstance(mappings, Rules) else mappings)
    return Packet(
        crm=crm,
        deal_id=str(data.get("deal_id", "local")),
        name=str(data.get("name", "")),
        deal=_canonical(schema, "deal", data.get("deal", {}), "deal"),
        company=_canonical(schema, "company", data.get("company", {}), "company"),
        contacts=_canonical_list(schema, "contact", data.get("contacts", []), "contacts"),
        line_items=_canonical_list(schema, "line_item", data.get("line_items", []), "line_items"),
        attachments=_canonical_list(
            schema, "attachment", data.get("attachments", []), "attachments"
        ),
    )


def _json_schema(crm: Any, mappings: MappingABC[str, Mapping] | None) -> Schema | None:
    if not isinstance(crm, str) or crm not in (mappings if mappings is not None else KNOWN_CRMS):
        have = ", ".join(sorted(mappings if mappings is not None else KNOWN_CRMS)) or "none"
        raise ValueError(f"no field mapping for crm {crm!r} (have: {have})")
    return schema_for(mappings[crm]) if mappings is not None else None


def _canonical_list(schema: Schema | None, kind: str, raw: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of objects")
    return [_canonical(schema, kind, item, f"{where}[{i}]") for i, item in enumerate(raw)]


def _canonical(schema: Schema | None, kind: str, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    known = schema.known(kind) if schema is not None else None
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if known is not None and key not in known:
            raise ValueError(
                f"{where}.{key}: not a {kind} field (known: {', '.join(sorted(known))})"
            )
        type_ = known[key] if known is not None else _json_type(value)
        converted = convert(value, type_)
        if converted is None and value is not None and str(value).strip():
            raise ValueError(f"{where}.{key}: {value!r} is not a valid {type_}")
        if converted is not None:
            result[key] = converted
    return result


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _json_type(value: Any) -> str:
    """A canonical field type guessed from a JSON value, when no mapping is at hand."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    text = str(value)
    return "date" if _DATE.match(text) else "datetime" if _DATETIME.match(text) else "string"
