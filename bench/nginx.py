"""nginx configs for the upstream and the reference reverse proxy.

Why one upstream nginx with one ``server`` block per setup: every setup hits the same process
(one worker, same body, same keep-alive rules), yet each block has its own access log, so the
requests that reached the upstream *through a given setup* can be counted exactly for the audit
check. The JWKS document is served from a block of its own so its fetches never pollute a count.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ManagedProcess, ProcessGroup, free_port, pinned, tool, wait_for_port

__all__ = [
    "CHAT_COMPLETION_BODY", "CHAT_COMPLETION_PATH", "LARGE_BODY_BYTES", "UPSTREAM_BODY", "NginxPaths", "proxy_conf",
    "start_nginx", "start_probe_upstream", "upstream_conf", "write_large_body",
]

# ~100 bytes of JSON, the same for every setup.
UPSTREAM_BODY = '{"id":42,"name":"portcullis-bench","status":"ok","tags":["a","b","c"],"note":"static upstream body"}'

# An OpenAI chat completion (what an agent's LLM call gets back), at the path OpenAI serves it from,
# in every block: the egress door and the peers (bench/run_peers.py) ask for it with a POST.
CHAT_COMPLETION_PATH = "/v1/chat/completions"
CHAT_COMPLETION_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini",'
    '"system_fingerprint":"fp_bench","choices":[{"index":0,"message":{"role":"assistant",'
    '"content":"Hello from the bench upstream.","refusal":null},"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}'
)

# nginx closes a keep-alive connection after 1000 requests by default; no other setup does, so
# the limit is lifted everywhere to keep connection reuse identical.
_KEEPALIVE = "keepalive_requests 1000000;\n    keepalive_timeout 75s;"

# The large answer the never-reading clients of the hostile runs ask for (bench.hostile): large
# enough that the gateway's write buffer and both kernels' socket buffers cannot hold it all.
LARGE_BODY_BYTES = 8 * 1024 * 1024
LARGE_BODY_FILE = "large.bin"


@dataclass(frozen=True, slots=True)
class NginxPaths:
    """Where one nginx instance keeps its prefix, pid file and error log (all in the run's temp dir)."""

    prefix: Path
    conf: Path
    pid: Path
    error_log: Path

    @classmethod
    def under(cls, prefix: Path) -> NginxPaths:
        return cls(prefix=prefix, conf=prefix / "nginx.conf", pid=prefix / "nginx.pid", error_log=prefix / "error.log")


def start_nginx(group: ProcessGroup, name: str, paths: NginxPaths, conf_text: str, cpu: int | None) -> ManagedProcess:
    """Our own nginx in the foreground, every path (prefix, logs, temp, pid) under ``paths.prefix``."""
    (paths.prefix / "temp").mkdir(parents=True, exist_ok=True)
    paths.conf.write_text(conf_text, encoding="utf-8")
    argv = ["nginx", "-p", str(paths.prefix), "-e", str(paths.error_log), "-c", str(paths.conf),
            "-g", "daemon off;"]
    return group.start(name, argv, cpu=cpu)


def _common(paths: NginxPaths) -> str:
    temp = paths.prefix / "temp"
    return f"""worker_processes 1;
pid {paths.pid};
error_log {paths.error_log} warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server_tokens off;
    {_KEEPALIVE}
"""


def write_large_body(www: Path) -> Path:
    """The file behind ``/api/large/blob`` (readable by nginx's unprivileged workers)."""
    path = www / LARGE_BODY_FILE
    with path.open("wb") as f:
        f.write(b"L" * LARGE_BODY_BYTES)
    path.chmod(0o644)
    return path


def upstream_conf(paths: NginxPaths, blocks: dict[str, int], logs: dict[str, Path], jwks_port: int,
                  jwks_root: Path) -> str:
    """The upstream: one server block per setup (``blocks``: name → port), each logging to ``logs[name]``,
    plus the JWKS block serving ``jwks_root/jwks.json``. Every block also serves the large body
    (``jwks_root/large.bin``, see ``write_large_body``) at ``/api/large/blob``; the benchmark's
    request never asks for it. Every block answers a chat completion at ``CHAT_COMPLETION_PATH``."""
    large = jwks_root / LARGE_BODY_FILE
    servers = []
    for name, port in blocks.items():
        servers.append(f"""
    server {{  # {name}
        listen 127.0.0.1:{port};
        access_log {logs[name]};
        default_type application/json;
        location / {{ return 200 '{UPSTREAM_BODY}'; }}
        location = /api/large/blob {{ default_type application/octet-stream; alias {large}; }}
        location = {CHAT_COMPLETION_PATH} {{ return 200 '{CHAT_COMPLETION_BODY}'; }}
    }}""")
    servers.append(f"""
    server {{  # JWKS for the JWT setup
        listen 127.0.0.1:{jwks_port};
        access_log off;
        root {jwks_root};
        location = /jwks.json {{ default_type application/json; }}
        location / {{ return 404; }}
    }}""")
    return _common(paths) + "".join(servers) + "\n}\n"


def proxy_conf(paths: NginxPaths, listen_port: int, upstream_port: int) -> str:
    """The reference reverse proxy: pooled keep-alive to the upstream, no access log, nothing else."""
    return _common(paths) + f"""
    access_log off;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen_port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_probe_upstream(work: Path, cpu: int) -> tuple[subprocess.Popen[bytes], int]:
    """The upstream of a probe (``cpu_per_request``, ``mtls_handshakes``): one nginx in the foreground
    on ``cpu``, one block answering the benchmark's body, all its files under ``work/nginx``."""
    up_port, jwks_port = free_port(), free_port()
    paths = NginxPaths(prefix=work / "nginx", conf=work / "nginx" / "nginx.conf", pid=work / "nginx" / "nginx.pid",
                       error_log=work / "nginx" / "error.log")
    (paths.prefix / "temp").mkdir(parents=True)
    (work / "jwks").mkdir()
    paths.conf.write_text(upstream_conf(paths, {"up": up_port}, {"up": work / "access.log"}, jwks_port, work / "jwks"))
    proc = subprocess.Popen(  # noqa: S603 - argv built here
        [*pinned(cpu), tool("nginx"), "-p", str(paths.prefix), "-e", str(paths.error_log), "-c", str(paths.conf),
         "-g", "daemon off;"])
    if not wait_for_port(up_port, 10):
        proc.kill()
        raise RuntimeError("nginx did not start")
    return proc, up_port
