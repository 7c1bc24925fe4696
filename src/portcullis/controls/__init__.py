"""Incident controls: blocks and emergency limits an operator applies during an incident.

- ``model``: the value types (``Block``, ``EmergencyLimit``) and their rules;
- ``addresses``: address blocks as a per-prefix-length table (cheap per request);
- ``snapshot``: what one instance enforces, immutable, swapped whole;
- ``service``: ``IncidentControls``, the acts (add, lift, list) and keeping the snapshot current.

Where each control is enforced: address blocks in the shield (``policies/stage1_shield/blocks.py``);
consumer and key blocks right after authentication (``policies/stage2_authenticate/blocks.py``);
workflow, user and execution blocks in the egress executor, for both egress doors; emergency
factors in the limiter (``limiting/emergency.py``, ``limiting/scaling.py``).
"""

from portcullis.controls.model import Block, BlockKind, EmergencyLimit, EmergencyScope
from portcullis.controls.service import IncidentControls
from portcullis.controls.snapshot import ControlSnapshot

__all__ = ["Block", "BlockKind", "ControlSnapshot", "EmergencyLimit", "EmergencyScope", "IncidentControls"]
