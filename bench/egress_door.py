"""The egress door under load: its gateway, its request, and the wrk script that sends it.

Why a module of its own: ``make bench`` (setup 8, against the full ingress pipeline) and
``make bench-peers`` (against LiteLLM's proxy) must measure the same thing: the same config, the
same chat-completion POST, the same headers. Both build the door here.

The call is what an agent's LLM request through the door looks like: ``POST
/egress/openai/v1/chat/completions`` with a small chat body, an API key, and the workflow and
execution ids the door requires; the gateway checks the destination, spends the limits and every
budget, injects the provider key from the vault and forwards to the upstream's chat completion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import gateway
from bench.nginx import CHAT_COMPLETION_PATH
from portcullis.vault import SECRET_KEY_ENV, generate_master_key

__all__ = ["CHAT_REQUEST_BODY", "DOOR_PATH", "EgressDoor", "call_headers", "prepare", "write_post_script"]

CHAT_REQUEST_BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
DOOR_PATH = f"/egress/{gateway.EGRESS_ROUTE}{CHAT_COMPLETION_PATH}"
WORKFLOW_ID, EXECUTION_ID = "bench-workflow", "bench-run-1"
# What the provider key would be: the upstream never checks it, the gateway must still inject it.
PROVIDER_KEY = "sk-bench-provider-key-never-leaves-the-gateway"


@dataclass(frozen=True, slots=True)
class EgressDoor:
    """A prepared egress gateway: its config on disk, the caller's key and the env it runs with."""

    config: dict[str, Any]
    config_path: Path
    api_key: str
    env: dict[str, str]


def prepare(workdir: Path, port: int, upstream_port: int, admin_port: int, env: dict[str, str]) -> EgressDoor:
    """Write the door's config, issue the caller's API key and store the provider key in the vault,
    with the real CLI. ``env`` carries the key pepper; the vault's master key is added here."""
    cfg = gateway.egress_config(workdir, port, upstream_port, admin_port)
    config_path = gateway.write_config(workdir / "portcullis.yaml", cfg)
    door_env = {**env, SECRET_KEY_ENV: generate_master_key()}
    cli_env = {**os.environ, **door_env}
    api_key = gateway.create_api_key(gateway.portcullis_argv(), config_path, cli_env, "bench-agent")
    gateway.set_secret(gateway.portcullis_argv(), config_path, cli_env, gateway.EGRESS_SECRET, PROVIDER_KEY)
    return EgressDoor(cfg, config_path, api_key, door_env)


def call_headers(api_key: str) -> list[tuple[str, str]]:
    """The headers of every call through the door (wrk adds the body and its Content-Length)."""
    return [("Accept", "application/json"), ("Content-Type", "application/json"), ("X-API-Key", api_key),
            ("X-Workflow-Id", WORKFLOW_ID), ("X-Execution-Id", EXECUTION_ID)]


def write_post_script(directory: Path, body: str = CHAT_REQUEST_BODY) -> Path:
    """A wrk script that makes every request a POST with ``body`` (headers come with ``-H``)."""
    if "]]" in body:
        raise ValueError("the body cannot contain ']]' (it is a Lua long string)")
    path = directory / "chat_post.lua"
    path.write_text(f'wrk.method = "POST"\nwrk.body = [[{body}]]\n', encoding="utf-8")
    return path
