"""The bundled demo backend and config used by ``make run``."""
