"""Portcullis configs for the three gateway setups, the API key and the JWT they use.

Why configs are generated rather than checked in: every port is picked free at run time and
every path lives in the run's temp dir, so two runs never share state (store, audit, counters).
Keys and tokens are made with the real tools (``portcullis keys create``, PyJWT) so the gateway
verifies exactly what a client would send.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = [
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "PEPPER_ENV",
    "JwtMaterial",
    "create_api_key",
    "egress_config",
    "full_config",
    "jwt_config",
    "make_jwt_material",
    "no_policy_config",
    "portcullis_argv",
    "set_secret",
    "write_config",
]

PEPPER_ENV = "BENCH_KEY_PEPPER"
JWT_ISSUER = "https://issuer.bench.invalid/"
JWT_AUDIENCE = "portcullis-bench"
ROUTE_PATH = "/api/{rest:path}"

# The egress door's route (an OpenAI-style provider on the local upstream) and its vault secret.
EGRESS_ROUTE = "openai"
EGRESS_SECRET = "openai_key"
# Every budget the door has, on and spent on every call, far above what a run can spend: a run makes
# ~100k calls per setup, so a refusal would mean a counting bug, not a spent budget.
EGRESS_BUDGET = 1_000_000_000

# Real evaluation on every request, never hit: three windows per key, as a production config has.
LIMIT_RATES = ["1000000/second", "60000000/minute", "3600000000/hour"]


@dataclass(frozen=True, slots=True)
class JwtMaterial:
    """The JWKS document the upstream nginx serves and a token signed by its key."""

    jwks: dict[str, Any]
    token: str
    kid: str


def make_jwt_material(consumer: str = "bench-jwt") -> JwtMaterial:
    """An RSA-2048 key, its public JWK (with ``kid``) and an RS256 token valid for one day."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "bench-" + uuid.uuid4().hex[:8]
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    now = int(time.time())
    claims = {"iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": consumer, "scope": "bench:read",
              "iat": now, "exp": now + 86400}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})
    return JwtMaterial(jwks={"keys": [jwk]}, token=token, kid=kid)


def _base(workdir: Path, port: int, upstream_port: int, admin_port: int | None) -> dict[str, Any]:
    return {
        "version": 1,
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": ({"enabled": True, "host": "127.0.0.1", "port": admin_port} if admin_port is not None
                  else {"enabled": False}),
        "store": {"url": f"sqlite:///{workdir / 'portcullis.db'}"},
        "upstreams": {"bench": {"url": f"http://127.0.0.1:{upstream_port}"}},
    }


def _limits() -> list[dict[str, Any]]:
    return [
        {"name": "bench-per-consumer", "key": "consumer", "rates": LIMIT_RATES},
        {"name": "bench-per-ip", "key": "ip", "rates": LIMIT_RATES},
    ]


def _audit(workdir: Path) -> dict[str, Any]:
    # JSONL only (to_store: false) and no rotation during a run, so one file holds every record.
    return {"file": str(workdir / "audit.jsonl"), "to_store": False, "max_file_bytes": "4GiB",
            "spill_file": str(workdir / "audit.spill.jsonl")}


def no_policy_config(workdir: Path, port: int, upstream_port: int) -> dict[str, Any]:
    """Setup 4: a public route, no limits, no audit, no admin listener, minimal security headers.

    The security-headers step runs on every response and cannot be switched off; its optional
    parts (CSP, header removal) are turned off here.
    """
    cfg = _base(workdir, port, upstream_port, admin_port=None)
    cfg.update({
        "shield": {"unauthenticated_rate": None, "failed_auth_rate": None},
        "security_headers": {"content_security_policy": None, "remove_headers": []},
        "audit": {"file": None, "to_store": False, "spill_file": str(workdir / "audit.spill.jsonl")},
        "routes": [{"name": "bench", "path": ROUTE_PATH, "upstream": "bench", "auth": "none"}],
    })
    return cfg


def full_config(workdir: Path, port: int, upstream_port: int, admin_port: int) -> dict[str, Any]:
    """Setup 5: API keys, per-consumer and per-IP limits (3 windows each), JSONL audit, metrics, headers."""
    cfg = _base(workdir, port, upstream_port, admin_port)
    cfg.update({
        "keys": {"pepper": "${" + PEPPER_ENV + "}"},
        "audit": _audit(workdir),
        "routes": [{"name": "bench", "path": ROUTE_PATH, "upstream": "bench",
                    "auth": {"api_key": {}}, "rate_limits": _limits()}],
    })
    return cfg


def egress_config(workdir: Path, port: int, upstream_port: int, admin_port: int) -> dict[str, Any]:
    """The egress door (``/egress/openai/…``) as an agent's LLM calls use it.

    API-key callers with setup 5's two limits on the door, the route's own rate limit (three
    windows, never hit), every budget on (execution, workflow and user calls, execution and user
    cost, the route's calls per workflow and day; all far above what a run spends), a provider key
    injected from the vault (named in each call's record; a ``secret.read`` event a minute), JSONL audit, and the
    upstream reached over plain HTTP on loopback (``allow_http``, ``allow_networks``: a local
    stand-in for the provider). The config needs one ingress route; the run never calls it.
    """
    cfg = _base(workdir, port, upstream_port, admin_port)
    cfg.update({
        "keys": {"pepper": "${" + PEPPER_ENV + "}"},
        "audit": _audit(workdir),
        "routes": [{"name": "unused", "path": "/unused", "upstream": "bench", "auth": {"api_key": {}}}],
        "egress": {
            "entry": {"auth": {"api_key": {}}, "rate_limits": _limits()},
            "budgets": {
                "execution_calls": EGRESS_BUDGET, "execution_cost": float(EGRESS_BUDGET),
                "workflow_calls_per_hour": EGRESS_BUDGET, "workflow_calls_per_day": EGRESS_BUDGET,
                "user_calls_per_day": EGRESS_BUDGET, "user_cost_per_day": float(EGRESS_BUDGET),
            },
            "routes": [{
                "name": EGRESS_ROUTE, "url": f"http://127.0.0.1:{upstream_port}", "allow_http": True,
                "allow_networks": ["127.0.0.0/8"], "methods": ["POST", "GET"], "paths": ["/v1/**"],
                "headers": {"Authorization": "Bearer {secret:" + EGRESS_SECRET + "}"},
                "rate_limits": LIMIT_RATES, "cost": 0.001, "calls_per_workflow_day": EGRESS_BUDGET,
                "content_types": ["application/json"],
            }],
        },
    })
    return cfg


def redis_config(
    workdir: Path, port: int, upstream_port: int, admin_port: int, *, key_store: Path, redis_prefix: str,
    redis_url: str = "redis://127.0.0.1:6379/0",
) -> dict[str, Any]:
    """Setup 7: setup 5 with its rate limits counted in Redis (``redis_url``, under a fresh prefix).

    It reads its API key from setup 5's store (``key_store``), so both get the same request bytes.
    """
    cfg = full_config(workdir, port, upstream_port, admin_port)
    cfg["store"] = {"url": f"sqlite:///{key_store}"}
    cfg["shared_state"] = {"url": redis_url, "key_prefix": redis_prefix}
    return cfg


def jwt_config(workdir: Path, port: int, upstream_port: int, admin_port: int, jwks_url: str) -> dict[str, Any]:
    """Setup 6: as setup 5 but RS256 JWTs checked against a JWKS fetched over loopback HTTP."""
    cfg = _base(workdir, port, upstream_port, admin_port)
    cfg.update({
        "jwt_issuers": [{"name": "bench", "issuer": JWT_ISSUER, "audiences": [JWT_AUDIENCE],
                         "algorithms": ["RS256"], "jwks_uri": jwks_url, "allow_http_jwks": True}],
        "audit": _audit(workdir),
        "routes": [{"name": "bench", "path": ROUTE_PATH, "upstream": "bench",
                    "auth": {"jwt": {}}, "rate_limits": _limits()}],
    })
    return cfg


def portcullis_argv() -> list[str]:
    """The installed ``portcullis`` console script next to this interpreter (``-m`` as a fallback)."""
    script = Path(sys.executable).parent / "portcullis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "portcullis"]


class _NoAliasDumper(yaml.SafeDumper):
    """PyYAML writes an object used twice as an anchor and an alias; the gateway refuses aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(config, Dumper=_NoAliasDumper, sort_keys=False), encoding="utf-8")
    return path


def set_secret(portcullis: list[str], config_path: Path, env: dict[str, str], name: str, value: str) -> None:
    """Store a vault secret with the real CLI (the value on stdin, as an operator would)."""
    result = subprocess.run(  # noqa: S603 - argv built by the harness
        [*portcullis, "secrets", "set", name, "--config", str(config_path)],
        input=value.encode(), capture_output=True, env=env, cwd=config_path.parent, timeout=60, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"portcullis secrets set failed ({result.returncode}):\n"
                           f"{result.stdout.decode(errors='replace')}\n{result.stderr.decode(errors='replace')}")


def create_api_key(portcullis: list[str], config_path: Path, env: dict[str, str], consumer: str) -> str:
    """Issue a key with the real CLI against the setup's own SQLite store; returns the key."""
    result = subprocess.run(  # noqa: S603 - argv built by the harness
        [*portcullis, "keys", "create", "--consumer", consumer, "--scopes", "bench:read", "--json",
         "--config", str(config_path)],
        capture_output=True, env=env, cwd=config_path.parent, timeout=60, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"portcullis keys create failed ({result.returncode}):\n"
                           f"{result.stdout.decode(errors='replace')}\n{result.stderr.decode(errors='replace')}")
    key = json.loads(result.stdout)["key"]
    if not isinstance(key, str):
        raise RuntimeError(f"portcullis keys create --json gave no key: {result.stdout!r}")
    return key
