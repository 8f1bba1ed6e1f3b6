"""Errors a user can cause.

Anything raised as an `AtelierError` is the user's to fix: its message is one sentence that names the input and
what was expected, and front ends (CLI, server, lab) show that sentence instead of a traceback. Every other
exception is a bug in Atelier.
"""


class AtelierError(Exception):
    """A user-facing error: `str(error)` is one clear sentence, in English.

    `key` and `params` name the same sentence for a page that speaks the learner's language: the lab sends them
    with the English (server/lab.py) and shows its own `server.<key>` string of i18n/<lang>.json, {param} filled.
    """

    def __init__(self, message: str, key: str | None = None, **params: object) -> None:
        super().__init__(message)
        self.key = key
        self.params = params


class CheckpointError(AtelierError):
    """A model file that cannot be loaded: missing, truncated, unsupported or inconsistent."""


class InputError(AtelierError):
    """A bad value for a generation parameter (sampler name, size, steps, ...)."""
