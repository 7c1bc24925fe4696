"""Rendering console pages: Jinja2 templates from this package, autoescaped, no inline script.

Why Jinja2 with autoescape on for every template: every value a page shows (paths, consumer names,
audit fields, reasons an operator typed) may have come from a request, so escaping must be the
default that a template cannot forget; ``|safe`` and ``Markup`` are not used anywhere in the
console. The templates are read once, when this module is imported (never from disk on the event
loop while serving), and compile on first use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from portcullis.admin.guard import Operator
from portcullis.identity.admin_roles import Permission

__all__ = ["NAV", "TEMPLATES_DIR", "PageRenderer"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
_SOURCES = {path.name: path.read_text(encoding="utf-8") for path in TEMPLATES_DIR.glob("*.html")}

# The navigation: (path, label, the permission the page needs). A link shows only to who may follow it.
NAV: tuple[tuple[str, str, Permission], ...] = (
    ("/console/overview", "Overview", Permission.STATUS_READ),
    ("/console/budgets", "Budgets", Permission.BUDGETS_READ),
    ("/console/breakers", "Breakers", Permission.BREAKERS_READ),
    ("/console/anomalies", "Anomalies", Permission.ANOMALIES_READ),
    ("/console/audit", "Audit", Permission.AUDIT_READ),
    ("/console/keys", "Keys", Permission.KEYS_READ_OWN),
    ("/console/blocks", "Blocks", Permission.BLOCKS_READ),
)


def _utc(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class PageRenderer:
    """Renders a template into an HTML response with what every page shows (operator, nav, CSRF token)."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=DictLoader(_SOURCES), autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined, auto_reload=False,
        )
        self._env.filters["utc"] = _utc

    def page(self, request: Request, template: str, *, status: int = 200, operator: Operator | None = None,
             csrf_token: str | None = None, **context: Any) -> HTMLResponse:
        nav = [(path, label) for path, label, needed in NAV if operator is not None and operator.may(needed)]
        if operator is not None and not operator.may(Permission.AUDIT_READ) and operator.may(
                Permission.AUDIT_READ_OWN):
            nav += [(f"/console/audit/consumers/{c}", f"Audit: {c}") for c in sorted(operator.consumers)]
        body = self._env.get_template(template).render(
            operator=operator, nav=nav, csrf_token=csrf_token, current=request.url.path, **context)
        return HTMLResponse(body, status_code=status)
