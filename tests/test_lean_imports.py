"""What each process imports at start, since every library loaded there is resident memory (issue 8's budget).

The newest migration is read without Alembic for /readyz, so it must agree with Alembic's own answer.
"""

from __future__ import annotations

import subprocess
import sys

from alembic.script import ScriptDirectory

from bridge.storage import migrate


def _imported_after(code: str) -> set[str]:
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_the_head_revision_read_for_readyz_is_alembics() -> None:
    alembic_head = ScriptDirectory.from_config(migrate._alembic_config()).get_current_head()

    assert migrate.head_revision() == alembic_head


def test_the_delivery_worker_loads_neither_flask_nor_alembic() -> None:
    imported = _imported_after("import bridge.cli, bridge.operations.logs, bridge.delivery.worker")

    assert "sqlalchemy" in imported
    assert not imported & {"flask", "werkzeug", "alembic", "mako", "apispec"}


def test_the_web_app_loads_neither_alembic_nor_apispec_until_asked() -> None:
    imported = _imported_after(
        "import os\nfrom bridge.web.app import create_app\nfrom bridge.config import load_config\n"
        "create_app(load_config({'DATABASE_URL': 'sqlite://', 'BRIDGE_TOKENS': 'u:t'}))"
    )

    assert "flask" in imported
    assert not imported & {"alembic", "mako", "apispec"}
