"""The audit agent: daemon, store and the operators' command-line tools."""


class AgentError(Exception):
    """Base class of the agent's errors; the CLIs print them as one line."""
