"""The fleet store's schema: versioned migrations, and the version check.

`audit-agent fleet-init` (or the agent on start, with `migrate_on_start`)
applies the migrations a database lacks, each in its own transaction under
an advisory lock, and records it in `fleet_schema`. Readers and the shipper
refuse a database whose version is not theirs, in one line.

Every row carries its bastion's id; a bastion's rows are keyed by
(bastion, session id[, seq]), so shipping again writes nothing twice.
Commands and sessions keep the document fields the local store has as
columns, and what a later version of the agent adds (the fidelity work's
`kind`/`program`, the tamper evidence's `hash`) in columns that are
nullable or in `extra`, so an older database loses nothing.
"""

from __future__ import annotations

from typing import Any

from agent import AgentError

AGENT_ROLE = "bastion_audit_agent"
AUDITOR_ROLE = "bastion_audit_auditor"
NOTIFY_CHANNEL = "bastion_audit_commands"
# pg_advisory_xact_lock key: two fleet-inits at once take turns.
MIGRATION_LOCK = 0x62617374  # "bast"

_TABLES = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE bastions (
    id text PRIMARY KEY,
    name text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    bastion text NOT NULL REFERENCES bastions (id),
    id text NOT NULL,
    tag text NOT NULL,
    bastion_user text NOT NULL,
    remote_user text,
    host text,
    port integer,
    ssh_pid integer NOT NULL,
    start_ticks bigint NOT NULL DEFAULT 0,
    tty text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    status text NOT NULL,
    end_reason text,
    command_count integer NOT NULL DEFAULT 0,
    gaps jsonb NOT NULL DEFAULT '[]',
    remote_command text,
    origin text,
    client_addr text,
    inventory_host text,
    remote_account text,
    recorder text,
    hash text,               -- tamper evidence (issue 14), when the agent has it
    extra jsonb,             -- document fields this schema has no column for
    -- Which local state this is (shard number, shard mtime): an older one
    -- shipped again never replaces a newer one.
    state_shard integer NOT NULL,
    state_mtime_ns bigint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bastion, id)
);
CREATE INDEX sessions_started_at ON sessions (started_at);
CREATE INDEX sessions_bastion_user ON sessions (bastion_user);
CREATE INDEX sessions_remote_user ON sessions (remote_user);
CREATE INDEX sessions_host ON sessions (host);

CREATE TABLE commands (
    bastion text NOT NULL,
    session text NOT NULL,
    seq integer NOT NULL,
    time timestamptz NOT NULL,
    command text NOT NULL,
    cancelled boolean NOT NULL DEFAULT false,
    kind text NOT NULL DEFAULT 'command',   -- command, input, hidden_input
    program text,                           -- the program that read an input
    hash text,
    extra jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bastion, session, seq),
    FOREIGN KEY (bastion, session) REFERENCES sessions (bastion, id)
);
CREATE INDEX commands_time ON commands (time);
CREATE INDEX commands_command_trgm ON commands USING gin (command gin_trgm_ops);

-- A session's asciicast, zlib-compressed, in chunks of CAST_CHUNK_BYTES.
CREATE TABLE recordings (
    bastion text NOT NULL,
    session text NOT NULL,
    chunk integer NOT NULL,
    raw_bytes integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (bastion, session, chunk),
    FOREIGN KEY (bastion, session) REFERENCES sessions (bastion, id)
);

-- Who read or did what on the console (issue 18); filled by a later agent.
CREATE TABLE access_log (
    bastion text NOT NULL REFERENCES bastions (id),
    seq bigint NOT NULL,
    time timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    target text,
    detail jsonb,
    hash text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bastion, seq)
);
CREATE INDEX access_log_time ON access_log (time);

-- Signed checkpoints of each bastion's hash chain (issue 14), when it has one.
CREATE TABLE checkpoints (
    bastion text NOT NULL REFERENCES bastions (id),
    seq bigint NOT NULL,
    time timestamptz NOT NULL,
    hash text NOT NULL,
    signature text NOT NULL,
    extra jsonb,
    PRIMARY KEY (bastion, seq)
);
"""

_ACCESS = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AGENT_ROLE}') THEN
        CREATE ROLE {AGENT_ROLE} NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AUDITOR_ROLE}') THEN
        CREATE ROLE {AUDITOR_ROLE} NOLOGIN;
    END IF;
END
$$;

-- Which login role writes for which bastion: kept by the administrator.
CREATE TABLE fleet_agents (
    role name PRIMARY KEY,
    bastion text NOT NULL UNIQUE
);
ALTER TABLE fleet_agents ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_entry ON fleet_agents TO {AGENT_ROLE}
    USING (role = current_user);
CREATE POLICY auditors ON fleet_agents FOR SELECT TO {AUDITOR_ROLE} USING (true);
GRANT SELECT ON fleet_agents TO {AGENT_ROLE}, {AUDITOR_ROLE};

CREATE FUNCTION fleet_bastion() RETURNS text LANGUAGE sql STABLE AS
    'SELECT bastion FROM fleet_agents WHERE role = current_user';
GRANT SELECT ON fleet_schema TO {AGENT_ROLE}, {AUDITOR_ROLE};
GRANT SELECT, INSERT, UPDATE ON bastions, sessions, commands, recordings,
    access_log, checkpoints TO {AGENT_ROLE};
GRANT SELECT ON bastions, sessions, commands, recordings, access_log,
    checkpoints TO {AUDITOR_ROLE};
"""

_POLICIES = "".join(
    f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_bastion ON {table} TO {AGENT_ROLE}
    USING ({column} = fleet_bastion()) WITH CHECK ({column} = fleet_bastion());
CREATE POLICY auditors ON {table} FOR SELECT TO {AUDITOR_ROLE} USING (true);
"""
    for table, column in (
        ("bastions", "id"),
        ("sessions", "bastion"),
        ("commands", "bastion"),
        ("recordings", "bastion"),
        ("access_log", "bastion"),
        ("checkpoints", "bastion"),
    )
)

# One notification per session and statement, sent at commit, in commit
# order: audit-tail fetches that session's commands past what it has.
_NOTIFY = f"""
CREATE FUNCTION fleet_notify_commands() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}',
        json_build_object('bastion', bastion, 'session', session,
                          'first', min(seq), 'seq', max(seq))::text)
    FROM new_rows GROUP BY bastion, session;
    RETURN NULL;
END
$$;
CREATE TRIGGER commands_notify AFTER INSERT ON commands
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_notify_commands();
"""

# Auditors see every row (their policies are USING (true)), but under
# row-level security the planner will not use a column's statistics with an
# operator that is not leakproof, as LIKE and `~` are not, and pg_stats hides
# them: every text search was planned on default guesses, and over 1,000,000
# commands a regex matching none took 139 to 163 ms, 95 to 116 through the
# view, which runs as its owner. The view lists the columns of its day:
# a migration that adds one to commands makes it again.
_AUDITOR_READS = f"""
CREATE VIEW auditor_commands AS SELECT * FROM commands;
GRANT SELECT ON auditor_commands TO {AUDITOR_ROLE};

-- PostgreSQL's sample of the commands (agent/regex_prefilter.py: Sample).
CREATE FUNCTION auditor_command_sample(
    OUT common text[], OUT shares real[], OUT null_share real, OUT others text[]
) LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT most_common_vals::text::text[], most_common_freqs, null_frac,
        histogram_bounds::text::text[]
    FROM pg_catalog.pg_stats
    WHERE schemaname = current_schema() AND tablename = 'commands'
        AND attname = 'command'
$$;
REVOKE ALL ON FUNCTION auditor_command_sample() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION auditor_command_sample() TO {AUDITOR_ROLE};
"""

# (version, what it does, SQL); never edit one that has shipped: add another.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "bastions, sessions, commands, recordings, access log, checkpoints", _TABLES),
    (
        2,
        "the agent and auditor roles, row-level security, notifications",
        _ACCESS + _POLICIES + _NOTIFY,
    ),
    (3, "the auditors' view of the commands and their sample", _AUDITOR_READS),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(AgentError):
    """A fleet database whose schema this program cannot use."""


def applied_version(conn: Any) -> int | None:
    """The database's schema version; None when fleet-init never ran there."""
    row = conn.execute("SELECT to_regclass('fleet_schema') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    row = conn.execute("SELECT max(version) FROM fleet_schema").fetchone()
    return int(row[0]) if row[0] is not None else None


def check_version(conn: Any, where: str) -> None:
    """SchemaError, in one line, unless the database is at SCHEMA_VERSION."""
    version = applied_version(conn)
    if not conn.autocommit:
        conn.rollback()  # no transaction left open by a look
    if version is None:
        raise SchemaError(
            f"fleet database {where} has no bastion-audit schema: "
            "run audit-agent fleet-init"
        )
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"fleet database {where} has schema version {version}, older than "
            f"this agent's {SCHEMA_VERSION}: run audit-agent fleet-init"
        )
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"fleet database {where} has schema version {version}, newer than "
            f"this agent's {SCHEMA_VERSION}: upgrade bastion-audit"
        )


def migrate(conn: Any, upto: int = SCHEMA_VERSION) -> list[int]:
    """Apply the migrations the database lacks (up to `upto`); the versions applied.

    Each migration is one transaction (`conn` in autocommit mode, or idle).
    """
    done: list[int] = []
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fleet_schema ("
            " version integer PRIMARY KEY,"
            " description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, description, sql in MIGRATIONS:
        if version > upto:
            break
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            row = conn.execute(
                "SELECT 1 FROM fleet_schema WHERE version = %s", (version,)
            ).fetchone()
            if row is not None:
                continue
            conn.execute(sql)
            conn.execute(
                "INSERT INTO fleet_schema (version, description) VALUES (%s, %s)",
                (version, description),
            )
            done.append(version)
    return done
