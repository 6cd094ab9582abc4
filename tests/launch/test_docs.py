"""docs/launch.md lists every setting mpiray has."""

from pathlib import Path

from mpiray._config import settings_table

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_settings_table_lists_every_setting():
    text = (DOCS / "launch.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "MPIRAY_" in line]
    for name, env, _default in settings_table():
        assert any(f"`{env}`" in row for row in rows), f"{env} missing from docs/launch.md"
        assert any(f"`{env}`" in row and (f"`{name}`" in row or row.startswith("| —"))
                   for row in rows), name
