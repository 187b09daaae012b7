"""Strace text to terminal events to the command lines the remote shell accepted."""


class ParserError(Exception):
    """Base class of the parsers' errors."""
