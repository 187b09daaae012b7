"""The operators' read-only tools: audit-tail, audit-export, audit-sessions,
audit-replay and `audit-agent status`.

They read the store, the casts and the status file through the shared core;
they never import the daemon (agent/daemon/) or the login shell (agent/shell/).
"""
