"""Finding tagged ssh clients and keeping one strace on each."""


class TracerError(Exception):
    """Base class of the tracer's errors."""
