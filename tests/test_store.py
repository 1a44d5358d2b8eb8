"""The subscriber store on SQLite and on the real PostgreSQL server alike.

The list is the asset a newsletter cannot lose, and the suppression list is the promise
it cannot break: these tests pin case-insensitive identity, the suppression invariant
(nothing brings an unsubscribed or erased address back), the keyset stream a send reads,
the GDPR export and erase, and that the migrations build exactly what the models declare.
"""

from __future__ import annotations

import json
import secrets

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

import mailer.store.ledger  # noqa: F401  (its tables are part of the metadata the migrations build)
from mailer.errors import SchemaError
from mailer.store.db import Base, check_schema, make_engine
from subscribers import store
from subscribers.addresses import address_hash
from subscribers.importer import import_csv
from subscribers.models import Activity, Status, Subscriber, SuppressionReason
from tests.conftest import POSTGRES_ADMIN_URL

FORM = store.Consent(
    source="form",
    text="I agree to receive The Weekly",
    ip="203.0.113.7",
    user_agent="Mozilla/5.0 (test)",
)


def _add(sessions, email, status=Status.PENDING, **kwargs):
    with sessions.begin() as session:
        return store.add(session, email, FORM, status=status, **kwargs)


def test_add_normalises_and_case_variants_are_the_same_address(sessions):
    added = _add(sessions, "  Alice@EXAMPLE.Com ", name=" Alice ", tags=("a", "b"))
    assert added.outcome == "added"
    assert added.subscriber.email == "Alice@example.com"
    for variant in ("alice@example.com", "ALICE@EXAMPLE.COM", "Alice@example.com"):
        again = _add(sessions, variant)
        assert again.outcome == "exists"
        assert again.subscriber.id == added.subscriber.id
    with sessions() as session:
        rows = session.scalars(select(Subscriber)).all()
        assert len(rows) == 1
        row = rows[0]
        assert (row.name, row.tags, row.status) == ("Alice", ["a", "b"], Status.PENDING)
        assert row.email_hash == address_hash("alice@example.com")


def test_unsubscribe_suppresses_for_good(sessions):
    subscriber = _add(sessions, "bob@example.com", Status.CONFIRMED).subscriber
    with sessions.begin() as session:
        subscriber = session.get(Subscriber, subscriber.id)
        assert store.unsubscribe(session, subscriber, how="test") is True
    with sessions.begin() as session:
        subscriber = session.get(Subscriber, subscriber.id)
        assert store.unsubscribe(session, subscriber, how="test") is False
        assert subscriber.status == Status.UNSUBSCRIBED
        assert subscriber.unsubscribed_at is not None
        suppression = store.suppression_of(session, "BOB@example.com")
        assert suppression is not None
        assert suppression.reason == SuppressionReason.UNSUBSCRIBED
    for variant in ("bob@example.com", "Bob@Example.COM", "BOB@EXAMPLE.COM"):
        assert _add(sessions, variant, Status.CONFIRMED).outcome == "suppressed"
    with sessions() as session:
        assert store.find(session, "bob@example.com").status == Status.UNSUBSCRIBED


def test_count_by_status(sessions):
    for n, status in enumerate([Status.PENDING, Status.PENDING, Status.CONFIRMED]):
        _add(sessions, f"c{n}@example.com", status)
    _add(sessions, "gone@example.com", Status.CONFIRMED)
    with sessions.begin() as session:
        store.unsubscribe(session, store.find(session, "gone@example.com"), how="test")
    with sessions() as session:
        assert store.count_by_status(session) == {
            "pending": 2,
            "confirmed": 1,
            "unsubscribed": 1,
            "bounced": 0,
            "complained": 0,
        }


def test_confirm(sessions):
    subscriber = _add(sessions, "carol@example.com").subscriber
    assert subscriber.confirmed_at is None
    with sessions.begin() as session:
        subscriber = session.get(Subscriber, subscriber.id)
        assert store.confirm(session, subscriber) is True
        assert store.confirm(session, subscriber) is False
    with sessions.begin() as session:
        subscriber = session.get(Subscriber, subscriber.id)
        assert subscriber.status == Status.CONFIRMED
        assert subscriber.confirmed_at is not None
        store.unsubscribe(session, subscriber, how="test")
        assert store.confirm(session, subscriber) is False
        assert subscriber.status == Status.UNSUBSCRIBED


def test_gdpr_export_holds_everything(sessions):
    subscriber = _add(sessions, "Dave@Example.com", name="Dave", tags=("x",)).subscriber
    with sessions.begin() as session:
        subscriber = session.get(Subscriber, subscriber.id)
        store.confirm(session, subscriber)
        store.unsubscribe(session, subscriber, how="one-click")
    with sessions() as session:
        export = store.gdpr_export(session, "dave@EXAMPLE.com")
    json.dumps(export)  # the CLI hands it over as JSON
    held = export["subscriber"]
    assert held["email"] == "Dave@example.com"
    assert held["name"] == "Dave"
    assert held["tags"] == ["x"]
    assert held["status"] == "unsubscribed"
    assert held["consent_ip"] == "203.0.113.7"
    assert held["consent_user_agent"] == "Mozilla/5.0 (test)"
    assert held["consent_source"] == "form"
    assert held["consent_text"] == "I agree to receive The Weekly"
    assert held["consent_at"] and held["created_at"] and held["confirmed_at"]
    assert held["unsubscribed_at"]
    assert [a["kind"] for a in export["activity"]] == ["subscribed", "confirmed", "unsubscribed"]
    assert export["activity"][2]["detail"] == {"how": "one-click"}
    assert export["suppression"]["reason"] == "unsubscribed"
    assert export["suppression"]["since"]


def test_gdpr_export_of_an_unknown_address(sessions):
    with sessions() as session:
        export = store.gdpr_export(session, "nobody@example.com")
    assert export["subscriber"] is None
    assert export["activity"] == []
    assert export["suppression"] is None


def test_erase_removes_personal_data_and_keeps_the_hash(sessions, tmp_path):
    kept = _add(sessions, "keep@example.com", Status.CONFIRMED).subscriber
    erased = _add(sessions, "Erin@Example.com", Status.CONFIRMED, name="Erin").subscriber
    with sessions.begin() as session:
        store.record(session, erased.id, "opened", edition="x")
    with sessions.begin() as session:
        assert store.erase(session, "ERIN@example.com") is True
    with sessions() as session:
        assert store.find(session, "erin@example.com") is None
        assert session.get(Subscriber, erased.id) is None
        left = session.execute(
            text("SELECT count(*) FROM activity WHERE subscriber_id = :id"), {"id": erased.id}
        ).scalar_one()
        assert left == 0
        # The other subscriber's history is untouched.
        assert session.scalar(
            select(func.count()).select_from(Activity).where(Activity.subscriber_id == kept.id)
        )
        suppression = store.suppression_of(session, "erin@example.com")
        assert suppression.reason == SuppressionReason.ERASED
        export = store.gdpr_export(session, "erin@example.com")
        assert export["subscriber"] is None and export["activity"] == []
        # Only the hash is kept: the address is nowhere in the database.
        for table in ("subscribers", "suppressions", "activity"):
            dump = [str(row) for row in session.execute(text(f"SELECT * FROM {table}"))]
            assert not any("erin" in row.lower() for row in dump), table
    assert _add(sessions, "erin@example.com", Status.CONFIRMED).outcome == "suppressed"
    csv_file = tmp_path / "back.csv"
    csv_file.write_text("email\nErin@example.com\n", "utf-8")
    report = import_csv(csv_file, sessions, store.Consent(source="import", text="old list"))
    assert (report.added, report.suppressed) == (0, 1)
    with sessions() as session:
        assert store.find(session, "erin@example.com") is None
    with sessions.begin() as session:
        assert store.erase(session, "erin@example.com") is False  # nothing left to erase


def test_remove_deletes_a_mistake_but_not_a_suppression(sessions):
    _add(sessions, "typo@example.com")
    with sessions.begin() as session:
        assert store.remove(session, "TYPO@example.com") is True
    with sessions.begin() as session:
        assert store.find(session, "typo@example.com") is None
        assert store.suppression_of(session, "typo@example.com") is None
        assert session.scalar(select(func.count()).select_from(Activity)) == 0
        assert store.remove(session, "typo@example.com") is False
    assert _add(sessions, "typo@example.com").outcome == "added"

    _add(sessions, "left@example.com", Status.CONFIRMED)
    with sessions.begin() as session:
        store.unsubscribe(session, store.find(session, "left@example.com"), how="test")
    with sessions.begin() as session:
        assert store.remove(session, "left@example.com") is True
    with sessions() as session:
        assert store.suppression_of(session, "left@example.com") is not None
    assert _add(sessions, "left@example.com").outcome == "suppressed"


def test_migrations_match_the_models(sessions):
    with sessions.kw["bind"].connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_check_schema_passes_on_a_migrated_database(sessions):
    check_schema(sessions.kw["bind"])


def test_check_schema_refuses_an_empty_database(sessions, tmp_path):
    if sessions.kw["bind"].dialect.name == "sqlite":
        empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        try:
            with pytest.raises(SchemaError, match="mailer db upgrade") as caught:
                check_schema(empty)
            assert "no schema" in str(caught.value)
        finally:
            empty.dispose()
        return
    name = f"mailer_empty_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(POSTGRES_ADMIN_URL).set(database=name)
        empty = make_engine(url.render_as_string(hide_password=False))
        try:
            with pytest.raises(SchemaError, match="mailer db upgrade") as caught:
                check_schema(empty)
            assert "no schema" in str(caught.value)
        finally:
            empty.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
