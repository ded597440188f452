"""The Salesforce DX project in salesforce-app/: what an admin deploys with
`sf project deploy start` must hold every field Fullkit reads and writes, let the
integration user write them, and send the outbound message the receiver understands,
only for hand-off stages and never for Fullkit's own writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from defusedxml.ElementTree import parse
from flask import Flask

from bridge.receivers import salesforce as receiver
from bridge.receivers import salesforce_soap
from bridge.rules import load_rules
from sandbox.salesforce_model import default_schema
from tests.conftest import ROOT

PROJECT = ROOT / "salesforce-app"
SOURCE = PROJECT / "force-app" / "main" / "default"
MD = "http://soap.sforce.com/2006/04/metadata"
Q = f"{{{MD}}}"

# Source format: folder -> (file suffix, root element), as the Metadata API guide names them.
TYPES = {
    "objects": (".object-meta.xml", "CustomObject"),
    "fields": (".field-meta.xml", "CustomField"),
    "customPermissions": (".customPermission-meta.xml", "CustomPermission"),
    "permissionsets": (".permissionset-meta.xml", "PermissionSet"),
    "workflows": (".workflow-meta.xml", "Workflow"),
    "flows": (".flow-meta.xml", "Flow"),
    "externalClientApps": (".eca-meta.xml", "ExternalClientApplication"),
    "extlClntAppOauthSettings": (".ecaOauth-meta.xml", "ExtlClntAppOauthSettings"),
    "extlClntAppGlobalOauthSets": (".ecaGlblOauth-meta.xml", "ExtlClntAppGlobalOauthSettings"),
    "extlClntAppOauthPolicies": (".ecaOauthPlcy-meta.xml", "ExtlClntAppOauthConfigurablePolicies"),
}

# SPEC "What Fullkit writes to the CRM": the Opportunity write-backs and their types.
WRITTEN = {
    "Opportunity.Fullkit_Status__c": "Picklist",
    "Opportunity.Fullkit_Missing__c": "LongTextArea",
    "Opportunity.Fullkit_Ops_Owner__c": "Email",
    "Opportunity.Fullkit_Ops_Link__c": "Url",
    "Opportunity.Fullkit_Expected_Kickoff__c": "Date",
}
# The salesforce_case target upserts by this external id and links the opportunity.
HANDOFF_FIELDS = {"Fullkit_Handoff_Id__c": "Text", "Fullkit_Opportunity__c": "Lookup"}
CASE_OBJECTS = ("Case", "Onboarding__c")
# Mapping sections -> the Salesforce object each reads (SPEC "Field mappings").
MAPPED_OBJECTS = {
    "deal": "Opportunity",
    "company": "Account",
    "contact": "Contact",
    "line_item": "OpportunityLineItem",
}
# Which metadata field types can carry each mapping type.
MAPPING_TYPES = {
    "string": {"Text", "TextArea", "LongTextArea", "Picklist", "Email", "Url", "Phone"},
    "number": {"Number", "Currency", "Percent"},
    "date": {"Date"},
    "datetime": {"DateTime"},
    "bool": {"Checkbox"},
    "list": {"MultiselectPicklist"},
}
# The sandbox org's describe types for the same metadata types.
SANDBOX_TYPES = {
    "Text": "string",
    "LongTextArea": "textarea",
    "Picklist": "picklist",
    "Email": "email",
    "Url": "url",
    "Date": "date",
    "Lookup": "reference",
}


def _xml(path: Path) -> Element:
    # forbid_dtd: a metadata file never has one, and Salesforce would refuse it.
    root: Element = parse(path, forbid_dtd=True).getroot()
    return root


def _qualified(path: str) -> str:
    return "/".join(Q + part for part in path.split("/"))


def _text(element: Element, path: str) -> str:
    found = element.find(_qualified(path))
    assert found is not None and found.text is not None, f"<{path}> missing"
    return found.text.strip()


def _texts(element: Element, path: str) -> list[str]:
    return [(e.text or "").strip() for e in element.findall(_qualified(path))]


def _field_types() -> dict[str, str]:
    """'Object.Field__c' -> metadata type, for every field the project deploys."""
    return {
        f"{path.parent.parent.name}.{path.name.removesuffix('.field-meta.xml')}": _text(
            _xml(path), "type"
        )
        for path in SOURCE.glob("objects/*/fields/*.field-meta.xml")
    }


def _only(folder: str) -> Element:
    suffix = TYPES[folder][0]
    files = sorted((SOURCE / folder).glob(f"*{suffix}"))
    assert len(files) == 1, f"{folder}: expected one {suffix} file, found {files}"
    return _xml(files[0])


def _project() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((PROJECT / "sfdx-project.json").read_text())
    return document


def test_every_metadata_file_is_well_formed_and_of_its_folders_type() -> None:
    files = sorted(SOURCE.rglob("*.xml"))
    assert len(files) > 20
    for path in files:
        root = _xml(path)
        parts = path.relative_to(SOURCE).parts
        folder = parts[2] if parts[0] == "objects" and len(parts) == 4 else parts[0]
        suffix, kind = TYPES[folder]
        assert path.name.endswith(suffix), path
        assert root.tag == Q + kind, f"{path}: root {root.tag}, expected {kind}"


def test_project_deploys_its_source_folder_with_a_current_api_version() -> None:
    project = _project()
    assert [d["path"] for d in project["packageDirectories"]] == ["force-app"]
    assert float(project["sourceApiVersion"]) >= 60.0  # client credentials in ECAs: 60.0
    for flow in SOURCE.glob("flows/*.flow-meta.xml"):
        assert _text(_xml(flow), "apiVersion") == project["sourceApiVersion"]


def test_fields_the_mapping_reads_exist_with_a_type_that_fits() -> None:
    rules = load_rules(ROOT / "kit_rules")
    mapping = rules.mappings["salesforce"]
    types = {name.lower(): kind for name, kind in _field_types().items()}
    custom = [
        (MAPPED_OBJECTS[section], spec)
        for section in MAPPED_OBJECTS
        for spec in mapping.fields(section)
        if spec.property.lower().endswith("__c")
    ]
    assert {spec.property for _, spec in custom} >= {
        "Plan__c",
        "Kickoff_Date__c",
        "SSO_Provider__c",
    }
    for obj, spec in custom:
        kind = types.get(f"{obj}.{spec.property}".lower())
        assert kind is not None, f"{obj}.{spec.property} (mapped as {spec.name}) is not deployed"
        assert kind in MAPPING_TYPES[spec.type], f"{obj}.{spec.property}: {kind} for {spec.type}"


def test_fields_fullkit_writes_exist_with_the_specs_types() -> None:
    types = _field_types()
    for name, kind in WRITTEN.items():
        assert types.get(name) == kind, name
    for obj in CASE_OBJECTS:
        for name, kind in HANDOFF_FIELDS.items():
            assert types.get(f"{obj}.{name}") == kind, f"{obj}.{name}"


def test_status_picklist_offers_exactly_what_fullkit_writes() -> None:
    status = _xml(SOURCE / "objects/Opportunity/fields/Fullkit_Status__c.field-meta.xml")
    assert _text(status, "valueSet/restricted") == "true"
    values = _texts(status, "valueSet/valueSetDefinition/value/fullName")
    assert sorted(values) == ["accepted", "returned"]


@pytest.mark.parametrize("obj", CASE_OBJECTS)
def test_handoff_id_is_a_unique_external_id_so_a_retry_upserts_one_record(obj: str) -> None:
    field = _xml(SOURCE / f"objects/{obj}/fields/Fullkit_Handoff_Id__c.field-meta.xml")
    assert _text(field, "externalId") == "true"
    assert _text(field, "unique") == "true"
    # `salesforce:<18-character id>:<attempt>` must fit.
    assert int(_text(field, "length")) >= len("salesforce:") + 18 + len(":999")
    link = _xml(SOURCE / f"objects/{obj}/fields/Fullkit_Opportunity__c.field-meta.xml")
    assert _text(link, "referenceTo") == "Opportunity"


def test_project_matches_the_sandbox_org_fullkit_is_tested_against() -> None:
    """The loopback org plays a Salesforce org with this project deployed; a field the
    project defines differently from the sandbox would pass the tests and fail in an org."""
    schema = default_schema()
    for name, kind in _field_types().items():
        obj, field = name.split(".")
        if not field.startswith("Fullkit_"):
            continue
        defined = schema[obj.lower()].field(field)
        assert defined is not None, f"the sandbox lacks {name}"
        assert defined.type == SANDBOX_TYPES[kind], f"{name}: {kind} here, {defined.type} there"


def test_permission_set_lets_the_integration_user_do_what_fullkit_does() -> None:
    permissions = _only("permissionsets")
    fields = {
        _text(grant, "field"): (_text(grant, "readable"), _text(grant, "editable"))
        for grant in permissions.findall(f"{Q}fieldPermissions")
    }
    written = [*WRITTEN, *(f"{o}.{f}" for o in CASE_OBJECTS for f in HANDOFF_FIELDS)]
    for name in written:
        assert fields.get(name) == ("true", "true"), f"{name} must be readable and editable"
    for name in _field_types():
        assert fields.get(name, ("false",))[0] == "true", f"{name} must be readable"
    objects = {
        _text(grant, "object"): {
            right: _text(grant, right) == "true"
            for right in ("allowCreate", "allowRead", "allowEdit")
        }
        for grant in permissions.findall(f"{Q}objectPermissions")
    }
    assert objects["Opportunity"]["allowRead"] and objects["Opportunity"]["allowEdit"]
    for obj in CASE_OBJECTS:  # the ops target upserts these
        assert all(objects[obj].values()), obj
    for obj in ("Account", "Contact", "Product2"):  # the packet reads them
        assert objects[obj]["allowRead"], obj
    users = {_text(g, "name") for g in permissions.findall(f"{Q}userPermissions")}
    assert "EditTask" in users  # the push-back task
    custom = {
        _text(g, "name"): _text(g, "enabled") for g in permissions.findall(f"{Q}customPermissions")
    }
    assert custom == {"Fullkit_Integration": "true"}
    assert (SOURCE / "customPermissions/Fullkit_Integration.customPermission-meta.xml").is_file()


def _outbound() -> Element:
    workflow = _xml(SOURCE / "workflows/Opportunity.workflow-meta.xml")
    messages = workflow.findall(f"{Q}outboundMessages")
    assert len(messages) == 1
    # Workflow Rules are retired: the flow sends the message.
    assert workflow.find(f"{Q}rules") is None
    return messages[0]


def _receiver_path() -> str:
    app = Flask(__name__)
    app.register_blueprint(receiver.blueprint)
    endpoint = f"{receiver.blueprint.name}.{receiver.receive_outbound.__name__}"
    (rule,) = [r.rule for r in app.url_map.iter_rules() if r.endpoint == endpoint]
    return rule


def _replaced(relative: str, placeholder: str) -> str:
    """The environment variable sfdx-project.json replaces `placeholder` with in a file."""
    found = [
        entry["replaceWithEnv"]
        for entry in _project()["replacements"]
        if entry["filename"] == f"force-app/main/default/{relative}"
        and entry["stringToReplace"] == placeholder
    ]
    assert len(found) == 1, f"{relative}: {placeholder!r} is not replaced at deploy time"
    return str(found[0])


def test_outbound_message_sends_what_the_receiver_requires_to_its_url() -> None:
    message = _outbound()
    assert set(_texts(message, "fields")) >= set(salesforce_soap.NEEDED_FIELDS)
    # A session id in every message would hand the integration user's session to anyone
    # who reads the request; Fullkit authenticates on its own.
    assert _text(message, "includeSessionId") == "false"
    endpoint = _text(message, "endpointUrl")
    assert endpoint.startswith("https://")
    host, _, path = endpoint.removeprefix("https://").partition("/")
    assert "/" + path == _receiver_path()
    assert _replaced("workflows/Opportunity.workflow-meta.xml", f"https://{host}") == (
        "FULLKIT_PUBLIC_URL"
    )
    user = _text(message, "integrationUser")
    assert _replaced("workflows/Opportunity.workflow-meta.xml", user) == (
        "FULLKIT_SF_INTEGRATION_USER"
    )


def _handoff_stages() -> set[str]:
    """Every kit's hand-off stage as Salesforce names it (StageName)."""
    rules = load_rules(ROOT / "kit_rules")
    mapping = rules.mappings["salesforce"]
    stages = {mapping.stage_ref(kit.handoff_stage) for kit in rules.kits}
    # The receiver queues only these; the flow must send at least what it queues.
    assert rules.handoff_stage_refs("salesforce") <= stages
    return stages


def test_flow_sends_the_message_when_the_stage_enters_a_handoff_stage() -> None:
    flow = _xml(SOURCE / "flows/Fullkit_Handoff.flow-meta.xml")
    assert _text(flow, "status") == "Active"
    assert _text(flow, "processType") == "AutoLaunchedFlow"
    start = flow.find(f"{Q}start")
    assert start is not None
    assert _text(start, "object") == "Opportunity"
    assert _text(start, "triggerType") == "RecordAfterSave"  # outbound messages need it
    filters = start.findall(f"{Q}filters")
    changed = [f for f in filters if _text(f, "operator") == "IsChanged"]
    assert [(_text(f, "field"), _text(f, "value/booleanValue")) for f in changed] == [
        ("StageName", "true")
    ]
    stages = {
        _text(f, "value/stringValue")
        for f in filters
        if _text(f, "field") == "StageName" and _text(f, "operator") == "EqualTo"
    }
    assert stages == _handoff_stages()
    # "changed AND (one of the stages)": filter 1 is the change, the rest the stages.
    assert _text(flow, "start/filterLogic") == "1 AND " + (
        "2" if len(stages) == 1 else "(" + " OR ".join(str(i + 2) for i in range(len(stages))) + ")"
    )
    (action,) = flow.findall(f"{Q}actionCalls")
    assert _text(action, "actionType") == "outboundMessage"
    assert _text(action, "actionName") == f"Opportunity.{_text(_outbound(), 'fullName')}"


def test_flow_skips_changes_made_by_the_integration_user() -> None:
    """Fullkit moves returned deals back and writes its fields as the integration user;
    the only path to the outbound message runs through a check of its custom permission."""
    flow = _xml(SOURCE / "flows/Fullkit_Handoff.flow-meta.xml")
    action = _text(flow, "actionCalls/name")
    assert _text(flow, "start/connector/targetReference") == _text(flow, "decisions/name")
    (decision,) = flow.findall(f"{Q}decisions")
    assert decision.find(f"{Q}defaultConnector") is None  # Fullkit's own change: stop
    (rule,) = decision.findall(f"{Q}rules")
    assert _text(rule, "connector/targetReference") == action
    (condition,) = rule.findall(f"{Q}conditions")
    assert _text(condition, "leftValueReference") == "$Permission.Fullkit_Integration"
    assert _text(condition, "operator") == "EqualTo"
    assert _text(condition, "rightValue/booleanValue") == "false"


def test_external_client_app_issues_client_credentials_tokens_as_the_integration_user() -> None:
    app = _only("externalClientApps")
    name = "Fullkit"
    assert (SOURCE / f"externalClientApps/{name}.eca-meta.xml").is_file()
    assert _text(app, "distributionState") == "Local"
    for folder in (
        "extlClntAppOauthSettings",
        "extlClntAppGlobalOauthSets",
        "extlClntAppOauthPolicies",
    ):
        assert _text(_only(folder), "externalClientApplication") == name, folder
    scopes = _text(_only("extlClntAppOauthSettings"), "commaSeparatedOauthScopes")
    assert "Api" in [s.strip() for s in scopes.split(",")]
    glob = _only("extlClntAppGlobalOauthSets")
    assert _text(glob, "isClientCredentialsFlowEnabled") == "true"
    # Salesforce generates the key and secret; they never belong in the repository.
    assert glob.find(f"{Q}consumerKey") is None and glob.find(f"{Q}consumerSecret") is None
    policies = _only("extlClntAppOauthPolicies")
    assert _text(policies, "isClientCredentialsFlowEnabled") == "true"
    user = _text(policies, "clientCredentialsFlowUser")
    assert _replaced("extlClntAppOauthPolicies/Fullkit.ecaOauthPlcy-meta.xml", user) == (
        "FULLKIT_SF_INTEGRATION_USER"
    )
    assert _replaced("externalClientApps/Fullkit.eca-meta.xml", _text(app, "contactEmail"))


def test_every_replacement_finds_its_placeholder() -> None:
    """A replacement whose string is gone would deploy the placeholder unnoticed."""
    for entry in _project()["replacements"]:
        text = (PROJECT / entry["filename"]).read_text()
        assert entry["stringToReplace"] in text, entry


def test_readme_walkthrough_sets_every_variable_the_deploy_reads() -> None:
    """An admin follows the README alone; a variable it never exports stops the deploy."""
    readme = (ROOT / "README.md").read_text()
    walkthrough = readme.split("## Connect a Salesforce org", 1)[1].split("\n## ", 1)[0]
    for entry in _project()["replacements"]:
        assert f"export {entry['replaceWithEnv']}=" in walkthrough, entry["replaceWithEnv"]
    assert _receiver_path() in walkthrough
