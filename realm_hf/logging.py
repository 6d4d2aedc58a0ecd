"""realm_hf's logging, with the functions of `transformers.logging`.

Every module logs through `get_logger(__name__)` (loggers `realm_hf.<module>`, children of the library logger
`realm_hf`). By default only warnings and errors are shown, as in transformers; `realm_hf.logging.set_verbosity_info()`
shows realm_hf's progress messages, `set_verbosity_error()` silences its warnings, and the environment variable
`REALM_HF_VERBOSITY` (`debug`, `info`, `warning`, `error`, `critical`; else `TRANSFORMERS_VERBOSITY`) sets the level
at import. `disable_progress_bars()` silences every progress bar a command shows (realm_hf's, transformers' and
datasets').

Example:

```python
>>> import realm_hf
>>> realm_hf.logging.set_verbosity_info()
```
"""

from __future__ import annotations

import logging
import os
import sys

from transformers.utils import logging as hf_logging


_LIBRARY = "realm_hf"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def get_logger(name: str) -> logging.Logger:
    """The logger of a realm_hf module (`name`: its `__name__`)."""
    _configure_library_logger()
    return logging.getLogger(name)


def get_verbosity() -> int:
    """The level of realm_hf's loggers (`logging.WARNING` unless set)."""
    return logging.getLogger(_LIBRARY).getEffectiveLevel()


def set_verbosity(level: int) -> None:
    """Sets the level of realm_hf's loggers (`logging.INFO`, ...). Messages go to the handlers of the root logger
    when it has some (`logging.basicConfig`, pytest), else to stderr through realm_hf's own handler."""
    library = logging.getLogger(_LIBRARY)
    library.setLevel(level)
    if not library.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(levelname)s|%(name)s] %(message)s"))
        library.addHandler(handler)


def set_verbosity_debug() -> None:
    set_verbosity(logging.DEBUG)


def set_verbosity_info() -> None:
    set_verbosity(logging.INFO)


def set_verbosity_warning() -> None:
    set_verbosity(logging.WARNING)


def set_verbosity_error() -> None:
    set_verbosity(logging.ERROR)


def disable_progress_bars() -> None:
    """Silences every progress bar: realm_hf's and transformers' (`transformers.logging.disable_progress_bar`) and
    those of datasets."""
    import datasets

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _configure_library_logger() -> None:
    library = logging.getLogger(_LIBRARY)
    if getattr(library, "_realm_hf_configured", False):
        return
    library._realm_hf_configured = True
    name = os.environ.get("REALM_HF_VERBOSITY") or os.environ.get("TRANSFORMERS_VERBOSITY")
    if name:
        if name.lower() not in _LEVELS:
            library.warning(f"Unknown verbosity {name!r}; use one of {', '.join(_LEVELS)}.")
        else:
            set_verbosity(_LEVELS[name.lower()])


__all__ = [
    "disable_progress_bars",
    "get_logger",
    "get_verbosity",
    "set_verbosity",
    "set_verbosity_debug",
    "set_verbosity_error",
    "set_verbosity_info",
    "set_verbosity_warning",
]
