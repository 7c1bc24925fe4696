"""The SIEM sinks the config lists (``audit.siem``), built once at start.

Why one place: ``open_services`` adds these beside the JSONL file and the store, each behind its
own ``SinkLane`` and spill file, and nothing else needs to know which transports exist. The
registry is the explicit ``match`` below, not an import side effect.

Sinks are named ``siem:<name>`` (logs, ``portcullis_audit_lost_records_total``). Their spill files
follow the file and store sinks' (``<spill_file>.2``, ``.3``, …) in config order, so keep the order
when adding one: a renamed or reordered list hands a spill file to another SIEM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from portcullis.audit.siem_http import HttpSink, resolve_headers
from portcullis.audit.siem_syslog import SyslogSink
from portcullis.config.model import HttpSiemConfig, SiemConfig, SyslogSiemConfig
from portcullis.stores.base import AuditSink

__all__ = ["open_siem_sinks"]


async def open_siem_sinks(
    configs: Sequence[SiemConfig], *, base_dir: Path, reveal: Callable[[str], Awaitable[str]],
) -> dict[str, AuditSink]:
    """One sink per configured SIEM; ``reveal`` reads a vault secret for an HTTP header."""
    sinks: dict[str, AuditSink] = {}
    for cfg in configs:
        match cfg:
            case SyslogSiemConfig():
                sinks[f"siem:{cfg.name}"] = SyslogSink(cfg, base_dir=base_dir)
            case HttpSiemConfig():
                headers = await resolve_headers(cfg.headers, reveal)
                sinks[f"siem:{cfg.name}"] = HttpSink(cfg, base_dir=base_dir, headers=headers)
    return sinks
