"""Signing in to the console from tests: a cookie-keeping httpx client and the page's CSRF token.

Shared by the console's integration and attack tests (the browser tests drive a real browser
instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

__all__ = ["ConsoleClient", "csrf_of", "sign_in"]

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The synchronizer token a console page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "no csrf_token field on the page"
    return found.group(1)


@dataclass
class ConsoleClient:
    """A signed-in browser, as far as HTTP goes: its cookie jar (in ``http``) and its session's token."""

    http: httpx.AsyncClient
    csrf: str

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: str | None = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        fields = {"csrf_token": self.csrf if csrf is None else csrf, **(data or {})}
        if csrf == "":
            del fields["csrf_token"]
        return await self.http.post(path, data=fields, headers=headers)


async def sign_in(app: FastAPI, credential: str, *, base_url: str = "http://127.0.0.1") -> ConsoleClient:
    """A client of ``app`` signed in to the console with ``credential`` (raises when refused)."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base_url)
    form = await http.get("/console/login")
    answer = await http.post("/console/login", data={"csrf_token": csrf_of(form.text), "credential": credential})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/overview", answer.text
    page = await http.get("/console/overview")
    return ConsoleClient(http, csrf_of(page.text))
