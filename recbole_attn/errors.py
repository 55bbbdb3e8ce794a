"""Errors that the command line reports as one clear line (no traceback)."""


class RecboleAttnError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


class ConfigError(RecboleAttnError, ValueError):
    """A configuration key has a value that is not allowed."""


class DataError(RecboleAttnError, ValueError):
    """An input data file is missing, empty or malformed."""


class CheckpointError(RecboleAttnError, ValueError):
    """A checkpoint file cannot be loaded or does not fit the current run."""
