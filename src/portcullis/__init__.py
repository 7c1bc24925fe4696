"""Portcullis: a security gateway for APIs, driven by one declarative YAML file.

The public surface is small on purpose; everything else is reached through its module.
"""

from __future__ import annotations

from portcullis.errors import ConfigError, ErrorCode, PortcullisError

__all__ = ["ConfigError", "ErrorCode", "PortcullisError", "__version__"]

__version__ = "0.1.0"
