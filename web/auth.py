"""Sign-in with the bastion host's Unix account, through PAM.

PAM, not /etc/shadow parsed by us: the host's own policy applies (password
hashes, locked and expired accounts via pam_acct_mgmt, pam_faildelay).
pam_unix reads /etc/shadow itself when the process may (root, or the group
`shadow`); audit-web runs as its own account in that group (README).
"""

from __future__ import annotations

import pwd
import re

import pamela

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
