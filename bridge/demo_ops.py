"""The ops tools of `fullkit demo` beyond the CRMs' own tickets and Cases.

A Jira site, an Asana workspace and a webhook receiver, each a loopback fake driven by
the real client code, and the kits that route the demo's HubSpot deals to them: big
accounts become an Asana project from the onboarding template, enterprise deals a Jira
issue, starter deals a signed JSON document for a provisioning system, and the rest a
HubSpot ticket (the shipped kit). The demo kits ask exactly what the shipped kit asks:
their requirements are read from it, so what sales is told never depends on the target.
"""

from __future__ import annotations

import base64
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandbox.asana import AsanaSandbox
from sandbox.asana_http import RunningAsanaSandbox, start_asana_sandbox
from sandbox.jira import JiraSandbox
from sandbox.jira_http import RunningJiraSandbox, start_jira_sandbox
from sandbox.webhook_sink import RunningWebhookSink, start_webhook_sink

SHIPPED_KIT = "10-new-customer.yaml"
OPS_OWNERS = ["ops-anna@example.com", "ops-ben@example.com"]
# What the demo's table calls the thing each target made.
MADE = {
    "hubspot_ticket": "ticket",
    "salesforce_case": "Case",
    "jira": "Jira issue",
    "asana": "Asana project",
    "webhook": "webhook document",
}


@dataclass
class OpsTools:
    jira: RunningJiraSandbox
    asana: RunningAsanaSandbox
    asana_gids: dict[str, str]
    sink: RunningWebhookSink
    webhook_secret: str

    def env(self) -> dict[str, str]:
        """The stack's settings for the three targets, as an operator would set them."""
        box = self.jira.sandbox
        return {
            "JIRA_BASE_URL": self.jira.url,
            "JIRA_EMAIL": box.email,
            "JIRA_API_TOKEN": box.api_token,
            "ASANA_API_BASE": self.asana.api_base,
            "ASANA_ACCESS_TOKEN": self.asana.sandbox.access_token,
            "FULLKIT_WEBHOOK_SECRET": self.webhook_secret,
        }

    def write_rules(self, shipped: Path, into: Path) -> Path:
        """The shipped rules folder plus the demo's kits, which come first by name."""
        shutil.rmtree(into, ignore_errors=True)
        shutil.copytree(shipped, into)
        base = yaml.safe_load((shipped / "kits" / SHIPPED_KIT).read_text())
        for name, kit in self._kits(base).items():
            text = f"# Written by `fullkit demo`: {kit['title']}.\n" + yaml.safe_dump(
                kit, sort_keys=False, allow_unicode=True
            )
            (into / "kits" / name).write_text(text)
        return into

    def _kits(self, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
        def kit(kit_id: str, title: str, when: str, ops: dict[str, Any]) -> dict[str, Any]:
            return {
                "kit": kit_id,
                "title": title,
                "crm": "hubspot",
                "applies_when": f'deal.pipeline == "default" && {when}',
                "handoff_stage": base["handoff_stage"],
                "ops": {**ops, "owners": OPS_OWNERS, "kickoff_within_days": 5},
                "requirements": base["requirements"],
            }

        gids = self.asana_gids
        return {
            "01-big-account-asana.yaml": kit(
                "big-account",
                "Big account onboarding (an Asana project from the onboarding template)",
                "deal.amount >= 40000",
                {"target": "asana", "template": gids["template"], "team": gids["team"]},
            ),
            "02-enterprise-jira.yaml": kit(
                "enterprise",
                "Enterprise onboarding (a Jira issue for the solutions team)",
                'deal.plan == "enterprise"',
                {
                    "target": "jira",
                    "project": "OPS",
                    "issue_type": "Task",
                    "components": ["Enterprise"],
                    "labels": ["onboarding"],
                },
            ),  # fmt: skip
            "03-starter-webhook.yaml": kit(
                "starter",
                "Starter provisioning (a signed document to the provisioning system)",
                'deal.plan == "starter"',
                {"target": "webhook", "url": f"{self.sink.url}/hooks/provisioning"},
            ),
        }

    def made(self) -> dict[str, int]:
        """How many of each the tools hold now."""
        asana = self.asana.sandbox
        template_projects = [
            p for p in asana.project_list(self.asana_gids["team"]) if "[" in str(p.get("name"))
        ]
        return {
            "Jira issues": sum(
                1
                for issue in self.jira.sandbox.issues.values()
                if (issue.fields.get("issuetype") or {}).get("name") == "Task"
            ),
            "Asana projects": len(template_projects),
            "webhook documents": len(self.sink.sandbox.handoffs()),
        }

    def stop(self) -> None:
        for server in (self.jira, self.asana, self.sink):
            server.stop()


def start_ops_tools() -> OpsTools:
    jira_box = JiraSandbox()
    jira_box.seed_default_site()
    jira = start_jira_sandbox(sandbox=jira_box)
    asana_box = AsanaSandbox()
    gids = asana_box.seed_default_workspace()
    asana = start_asana_sandbox(sandbox=asana_box)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    sink = start_webhook_sink(secret=secret)
    return OpsTools(jira, asana, gids, sink, secret)
