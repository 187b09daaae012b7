"""Finding tagged ssh clients and keeping one strace on each."""

import enum


class TracerError(Exception):
    """Base class of the tracer's errors."""


class Mode(enum.StrEnum):
    """What happens to a session that cannot be recorded (README: modes)."""

    STRICT = "strict"  # it is ended, with the reason in its record
    PERMISSIVE = "permissive"  # it goes on, and its record shows the gap
