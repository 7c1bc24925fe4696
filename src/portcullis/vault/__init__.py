"""The credential vault: provider secrets encrypted at rest, decrypted only at injection time."""

from portcullis.vault.vault import SECRET_KEY_ENV, MasterKeys, Vault, generate_master_key

__all__ = ["SECRET_KEY_ENV", "MasterKeys", "Vault", "generate_master_key"]
