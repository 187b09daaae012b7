"""The Reader (agent/reading.py) over one data directory's store and casts."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from agent.access_log import AccessEntry
from agent.casts import CastError, cast_path, read_cast
from agent.reader import Snapshot, StoreFollower, check_data_dir, load
from agent.reading import Follower, Reader, Row, Selection
from agent.records import Command, Session


class LocalReader(Reader):
    """The shards of DATA_DIR/store, read once (a snapshot) when first asked."""

    fleet = False

    def __init__(
        self, data_dir: Path, progress: Callable[[int, int], None] | None = None
    ) -> None:
        check_data_dir(data_dir)
        self.data_dir = data_dir
        self.where = str(data_dir)
        self.progress = progress  # told the shards read, as they are
        self._snapshot: Snapshot | None = None
        self.errors: list[str] = []

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = load(self.data_dir, self.progress)
            self.errors = self._snapshot.errors
        return self._snapshot

    def sessions(
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[Session]:
        chosen = self._sessions(selection)
        if newest_first:
            chosen.reverse()
        end = None if limit is None else offset + limit
        return chosen[offset:end]

    def _sessions(self, selection: Selection) -> list[Session]:
        now = time.time()
        having = self._having(selection.having)
        return [
            s
            for s in sorted(
                self.snapshot.sessions.values(), key=lambda s: (s.started_at, s.id)
            )
            if (not selection.session or selection.session in (s.id, s.tag))
            and selection.session_matches(s)
            and selection.in_window(s, now)
            and (selection.status is None or s.status == selection.status)
            and (having is None or s.id in having)
        ]

    def _having(self, text: str | None) -> set[str] | None:
        """The sessions with a command containing `text` (any case); None: any."""
        if text is None:
            return None
        needle = text.casefold()
        return {
            c.session for c in self.snapshot.commands if needle in c.command.casefold()
        }

    def count_sessions(self, selection: Selection) -> int:
        return len(self._sessions(selection))

    def commands(
        self,
        selection: Selection,
        limit: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> Iterator[Row]:
        selection.python_regex()  # ReadError now, not at the first row
        sessions = self.snapshot.sessions
        matches = selection.command_matches
        stored = self.snapshot.commands
        rows = (
            (c, s)
            for c in (reversed(stored) if newest_first else stored)
            if matches(c, s := sessions.get(c.session))
        )
        if limit is None and not offset:
            return rows
        end = None if limit is None else offset + limit
        return itertools.islice(rows, offset, end)

    def count_commands(self, selection: Selection, at_most: int | None = None) -> int:
        return sum(1 for _ in self.commands(selection, at_most))

    def access(self, limit: int | None = None, offset: int = 0) -> list[AccessEntry]:
        newest_first = self.snapshot.access[::-1]
        end = None if limit is None else offset + limit
        return newest_first[offset:end]

    def count_access(self) -> int:
        return len(self.snapshot.access)

    def cast_file(self, name: str) -> Path:
        """The recording of session `name` (an id, or a tag used only once)."""
        path = cast_path(self.data_dir, name)
        if "/" not in name and path.exists():
            return path
        ids = sorted(
            s.id for s in self.snapshot.sessions.values() if name in (s.id, s.tag)
        )
        if len(ids) > 1:
            raise CastError(
                f"tag {name!r} names {len(ids)} sessions ({', '.join(ids)}): pick one"
            )
        if not ids:
            raise CastError(f"no session {name!r} in {self.data_dir}")
        path = cast_path(self.data_dir, ids[0])
        if not path.exists():
            raise CastError(f"session {ids[0]} has no recording (at {path})")
        return path

    def cast(self, name: str, bastion: str | None = None) -> bytes:
        return read_cast(self.cast_file(name))

    def recording_bytes(self, session: Session) -> int | None:
        try:
            return cast_path(self.data_dir, session.id).stat().st_size
        except OSError:
            return None

    def follower(self, selection: Selection, last: int = 10) -> Follower:
        return LocalFollower(self.data_dir, selection)


class LocalFollower(Follower):
    def __init__(self, data_dir: Path, selection: Selection) -> None:
        self.store = StoreFollower(data_dir)
        self.selection = selection
        self.errors = self.store.errors
        self.sessions = self.store.sessions

    def poll(self) -> list[Row]:
        rows: list[Row] = []
        commands: list[Command] = self.store.poll()
        for command in commands:
            session = self.store.sessions.get(command.session)
            if self.selection.command_matches(command, session):
                rows.append((command, session))
        return rows
