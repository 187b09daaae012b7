"""audit-web: sign in, pick a host, take a one-time token for the web terminal."""

from agent import AgentError


class WebError(AgentError):
    """audit-web or the token login cannot do what was asked."""
