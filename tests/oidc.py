"""A real, certified OpenID provider for tests: panva's ``oidc-provider`` under Node on 127.0.0.1.

``tests/oidc_provider/server.mjs`` configures it (clients, resources, introspection, revocation, and
two test hooks to rotate and retire signing keys); ``make test-tools`` installs it with ``npm ci``.
Each test gets its own provider process (key rotation changes its state), started on a free port and
killed at the end. Without Node or the installed package the test skips, or fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import missing_service

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
JWT_RESOURCE = "https://api.jwt.test"
OPAQUE_RESOURCE = "https://api.opaque.test"
WORKER = ("worker", "worker-secret")  # a client_credentials client
GATEWAY = ("gateway", "gateway-secret")  # the resource server that introspects
_READY_WITHIN_S = 20.0


@dataclass
class OidcProvider:
    issuer: str

    async def token(self, resource: str = JWT_RESOURCE, scope: str = "read", client: tuple[str, str] = WORKER) -> str:
        """An access token from the client credentials grant (RFC 6749 section 4.4)."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.issuer}/token", auth=client,
                                   data={"grant_type": "client_credentials", "resource": resource, "scope": scope})
        resp.raise_for_status()
        token: str = resp.json()["access_token"]
        return token

    async def revoke(self, token: str, client: tuple[str, str] = WORKER) -> None:
        """RFC 7009 revocation at the provider's own endpoint."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.issuer}/token/revocation", auth=client, data={"token": token})
        resp.raise_for_status()

    async def hook(self, name: str) -> list[str]:
        """``rotate`` (a new signing key first, the old one still published) or ``retire`` (only the newest)."""
        async with httpx.AsyncClient() as http:
            resp = await http.post(f"{self.issuer}/_test/{name}")
        resp.raise_for_status()
        kids: list[str] = resp.json()["kids"]
        return kids

    async def metadata(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(f"{self.issuer}/.well-known/openid-configuration")
        resp.raise_for_status()
        document: dict[str, Any] = resp.json()
        return document


@pytest.fixture
def oidc_provider() -> Iterator[OidcProvider]:
    node = shutil.which("node")
    if node is None:
        missing_service("node is not installed (the OpenID provider runs on it)")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        missing_service("oidc-provider is not installed: run `make test-tools` (npm ci in tests/oidc_provider)")
    assert node is not None
    proc = subprocess.Popen(
        [node, "server.mjs"], cwd=PROVIDER_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NODE_ENV": "test"},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + _READY_WITHIN_S  # bounded wait on a real process, not a timing assertion
        line = ""
        while time.monotonic() < deadline and not line.startswith("ready "):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"the OpenID provider exited with {proc.returncode}")
        if not line.startswith("ready "):
            pytest.fail("the OpenID provider did not become ready")
        yield OidcProvider(issuer=line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
