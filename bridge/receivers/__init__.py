"""Webhook receivers: verify, parse, queue. They never call a CRM and know no kits."""
