"""Sign-in with the bastion host's Unix account, through PAM.

PAM, not /etc/shadow parsed by us: the host's own policy applies (password
hashes, locked and expired accounts via pam_acct_mgmt, pam_faildelay).
pam_unix reads /etc/shadow itself when the process may (root, or the group
`shadow`); audit-web runs as its own account in that group (README).
"""

from __future__ import annotations

import pwd
import re
from pathlib import Path

import pamela

LOGIN_DEFS = Path("/etc/login.defs")
UID_MIN_DEFAULT, UID_MAX_DEFAULT = 1000, 60000  # Debian's, when login.defs is silent
# A Unix user name as useradd accepts it; anything else never reaches PAM.
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def valid_user_name(name: str) -> bool:
    return bool(_USER_RE.fullmatch(name))


def account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def login_account(name: str) -> bool:
    """A person's account: uid between login.defs' UID_MIN and UID_MAX; never
    root, a system account (bastion-web, daemons) or nobody, whose passwords
    are nobody's to try."""
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return False
    low, high = _uid_range()
    return low <= uid <= high


def _uid_range(path: Path = LOGIN_DEFS) -> tuple[int, int]:
    found = {"UID_MIN": UID_MIN_DEFAULT, "UID_MAX": UID_MAX_DEFAULT}
    try:
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in found and words[1].isdigit():
                found[words[0]] = int(words[1])
    except OSError:
        pass
    return max(1, found["UID_MIN"]), found["UID_MAX"]


def authenticate(service: str, user: str, password: str) -> bool:
    """Whether PAM `service` accepts `user` with `password`, account included."""
    if not valid_user_name(user) or not password or len(password) > 1024:
        return False
    try:
        # No credentials to set: nobody logs in here, the page only learns who.
        pamela.authenticate(user, password, service=service, resetcred=0, check=True)
    except pamela.PAMError:
        return False
    return True
