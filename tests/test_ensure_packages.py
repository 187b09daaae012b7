"""scripts/ensure-packages.sh: no service a package brings starts, not even once.

apt and dpkg-query are stand-ins here (a test cannot install and remove
Debian packages on a machine others use); what is real is the script, and
policy-rc.d as Debian's maintainer scripts run it: the stand-in apt-get asks
it, as invoke-rc.d does, whether the package's service may start.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.root
SCRIPT = REPO / "scripts" / "ensure-packages.sh"


def stand_ins(bin_dir: Path, log: Path, missing: str, unit: str) -> None:
    bin_dir.mkdir()
    scripts = {
        "dpkg-query": f"""#!/bin/sh
case "$1" in
    -W) [ "$3" = "{missing}" ] && exit 1; echo 'install ok installed' ;;
    -L) echo /lib/systemd/system/{unit}.service; echo /etc/init.d/{unit} ;;
esac
""",
        # As invoke-rc.d: ask the policy first; 101 means the start is refused.
        "apt-get": f"""#!/bin/sh
[ "$1" = install ] || exit 0
"$POLICY_RC_D" {unit} start; echo "policy $?" >>{log}
""",
        "update-rc.d": f'#!/bin/sh\necho "update-rc.d $*" >>{log}\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def run(tmp_path: Path, *packages: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
        "POLICY_RC_D": str(tmp_path / "policy-rc.d"),
        "ENSURE_PACKAGES_LOCK": str(tmp_path / "lock"),
    }
    return subprocess.run(
        ["sh", str(SCRIPT), *packages], capture_output=True, text=True, env=env
    )


def test_a_service_is_refused_its_start_and_the_policy_goes_again(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    stand_ins(tmp_path / "bin", log, "shellinabox", "shellinabox")
    result = run(tmp_path, "strace", "shellinabox")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [
        "policy 101",  # the package's start was refused
        "update-rc.d shellinabox disable",  # and it stays off at boot
    ]
    assert not (tmp_path / "policy-rc.d").exists()  # ours, and gone again
    assert result.stdout.splitlines() == [
        "ensure-packages: installing shellinabox (their services are not started)",
        "ensure-packages: shellinabox (from shellinabox) is not started, "
        "and not at boot either",
    ]


def test_other_services_are_named_and_a_policy_already_there_is_kept(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    stand_ins(tmp_path / "bin", log, "openssh-server", "ssh")
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 101\n")
    policy.chmod(0o755)
    result = run(tmp_path, "openssh-server")
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["policy 101"]
    assert policy.read_text() == "#!/bin/sh\n# the machine's own\nexit 101\n"
    assert result.stdout.splitlines()[-1] == (
        "ensure-packages: ssh (from openssh-server) is not started; "
        "it may start at boot (systemctl disable ssh)"
    )
    nothing = run(tmp_path, "strace")  # all installed: no apt, no policy
    assert (nothing.returncode, nothing.stdout) == (0, "")
    assert os.path.exists(policy)
