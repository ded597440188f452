"""Security headers on every answer: nothing here is meant to be framed, sniffed or cached."""

from __future__ import annotations

from flask import Response

HSTS = "max-age=31536000; includeSubDomains"
# The console's pages: their own stylesheet and images, forms posting to themselves, no
# scripts at all (charts are inline SVG), and never framed.
CONSOLE_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # JSON and metrics need no sources; a page that does sets its own policy first.
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    # Hand-off histories and metrics are live and private: no browser or proxy keeps them.
    "Cache-Control": "no-store",
}


def secure(answer: Response, https: bool) -> Response:
    """Add what the answer does not set itself; HSTS only when the public URL is https."""
    for name, value in _ALWAYS.items():
        answer.headers.setdefault(name, value)
    if https:
        answer.headers.setdefault("Strict-Transport-Security", HSTS)
    return answer
