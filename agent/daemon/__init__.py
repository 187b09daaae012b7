"""The daemon, `audit-agent run` (root): discovery and straces (tracer/), ingest,
store writer, recorder, connection-record linker, events and status.

It imports the shared core (agent/), tracer/ and parsers/; never the operators'
tools (agent/tools/), the login shell (agent/shell/) or the web (web/).
"""
