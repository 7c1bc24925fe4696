"""Config → TLS contexts: the listeners' (``listen.tls``, ``admin.tls``) and the upstreams' client certificates.

Why here: the server library (``server/tls.py``) builds a context from plain ``TlsSettings`` and
knows nothing of the config; this module is the one translation, used by ``build_runtime`` (so a
reload re-reads the API listener's certificate, key, client CAs and CRLs, and refuses the reload
with a ``ConfigError`` naming the setting if any of them is broken: the old context keeps serving)
and by ``cli/serving.py`` for the listening sockets.

Upstream client keys are files: the vault holds values injected into egress requests and is read
asynchronously, while a TLS key must be a file OpenSSL loads. So the key file is refused when its
group or others may read or write it (``chmod 600``), as OpenSSH refuses a private key file that is
too open.
"""

from __future__ import annotations

import os
import ssl
import stat

from portcullis.config.tls import TlsConfig
from portcullis.errors import ConfigError
from portcullis.server.tls import TlsFilesInvalid, TlsSettings, server_context

__all__ = ["check_private_key_file", "listener_context", "tls_settings"]


def tls_settings(config: TlsConfig) -> TlsSettings:
    return TlsSettings(
        cert_file=config.cert_file, key_file=config.key_file, min_version=config.min_version,
        ciphers=config.ciphers, client_ca_file=config.client_ca_file, client_crl_file=config.client_crl_file,
        client_auth=config.client_auth,
    )


def listener_context(config: TlsConfig, *, where: str) -> ssl.SSLContext:
    """The server context for ``config``; ``ConfigError`` at ``where.<setting>`` when a file is unusable."""
    try:
        return server_context(tls_settings(config))
    except TlsFilesInvalid as exc:
        raise ConfigError(f"could not load the TLS files ({exc})", path=f"{where}.{exc.what}") from exc


def check_private_key_file(path: str, *, where: str) -> None:
    """Refuse a private key file that is missing, not a regular file, or open to the group or others."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r} ({type(exc).__name__})", path=where) from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path!r} is not a regular file", path=where)
    if info.st_mode & 0o077:
        raise ConfigError(f"{path!r} is open to the group or others (mode {stat.S_IMODE(info.st_mode):o}); "
                          "chmod 600 it", path=where)
