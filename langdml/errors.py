"""User-facing errors: the CLI prints these as one line, never a traceback."""


class LangDMLError(ValueError):
    """Bad input or state the user can fix; the message names the value and what was expected."""


class ConfigError(LangDMLError):
    """An invalid experiment or ablation config."""


class DataError(LangDMLError):
    """A dataset that is missing, malformed or not the named format."""


class ModelError(LangDMLError):
    """A model spec or weights file that cannot be loaded."""
