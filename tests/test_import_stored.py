"""What an import leaves in the columns themselves: the times as the ORM would write them
(not sqlite3's own, deprecated, rendering) and the tags as the file's JSON text."""

from __future__ import annotations

from sqlalchemy import text

from subscribers import store
from subscribers.importer import import_csv

CSV = (
    "Email Address,First Name,OPTIN_TIME,CONFIRM_TIME,LEID,EUID,TAGS\n"
    'ada@example.org,Ada,2024-01-02 03:04:05,2024-01-03T03:04:05.5+02:00,1,1,"""vip"""\n'
)


def test_an_import_stores_times_and_tags_as_the_orm_does(sessions, tmp_path):
    path = tmp_path / "audience.csv"
    path.write_text(CSV, encoding="utf-8")
    import_csv(path, sessions, store.Consent(source="import:x", text="t"))
    with sessions() as session:
        row = session.execute(text("SELECT consent_at, confirmed_at, tags FROM subscribers")).one()
    if session.get_bind().dialect.name == "sqlite":
        assert row == ("2024-01-02 03:04:05.000000", "2024-01-03 01:04:05.500000", '["vip"]')
    else:
        assert [at.isoformat() for at in row[:2]] == [
            "2024-01-02T03:04:05+00:00",
            "2024-01-03T01:04:05.500000+00:00",
        ]
        assert row[2] == ["vip"]
