"""``serve`` starts its migration and its delivery worker from the bridge it runs, wherever it is started from.

Started in a directory that holds another ``bridge`` package (a source checkout beside an installed bridge, an older
copy, a benchmark's other tree on PYTHONPATH), the children once imported that directory's copy: ``python -m``
puts the working directory first on the path. Here that copy refuses to run, so a bridge whose children import it
never gets ready or never delivers.
"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.intake_server import IntakeServer
from tests.reliability.harness import (
    BridgeProcess,
    bridge_env,
    create_url,
    delivered_keys,
    free_port,
    running_body,
    wait_until_drained,
)

_IMPOSTOR = "import sys\nopen(sys.argv[0] + '.ran', 'w').close()\nsys.exit('not the bridge being served')\n"


def test_serve_from_a_directory_with_another_bridge_package_runs_its_own_children(
    tmp_path: Path, sqlite_url: str, intake: IntakeServer
) -> None:
    other = tmp_path / "elsewhere"
    (other / "bridge").mkdir(parents=True)
    (other / "bridge" / "__init__.py").write_text("")
    (other / "bridge" / "__main__.py").write_text(_IMPOSTOR)
    env = bridge_env(sqlite_url, intake.url, free_port())

    with BridgeProcess("serve", env, tmp_path / "bridge.log", cwd=other) as bridge:
        bridge.start()
        answer = requests.put(create_url(bridge.base_url), json=running_body(1), timeout=10)
        assert answer.status_code == 200, answer.text
        assert wait_until_drained(sqlite_url, timeout=30) == 0, bridge.log_tail()

    assert sum(delivered_keys(intake).values()) == 2  # the build's pipeline and job bodies
    assert list(other.rglob("*.ran")) == []
