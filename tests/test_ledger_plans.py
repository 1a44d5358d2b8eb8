"""On PostgreSQL, "is anything of this campaign still open?" reads the index of open rows,
not the whole ledger, whichever campaign it is asked of, and however often: a finished one
beside one half sent (whose open rows the planner, taking campaign and status to be
independent, expects to be a quarter of its rows), and the sending one (whose open rows lie
at the end of the ledger), planned for the campaign asked of or, once the driver has
prepared the statement, for any."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mailer.sending.batch import _OPEN_AFTER
from mailer.store.db import make_engine, make_sessions, upgrade
from mailer.store.ledger import BATCH_SIZE, Campaign, CampaignState, finish_if_done
from tests.conftest import POSTGRES_ADMIN_URL

# Two campaigns of this many readers. Asked with an EXISTS, the finished one's questions go to
# a Seq Scan from 3000 on; at 5000 by the widest margin of 3000 to 6000 (costs 0.18 and 0.24
# against the index's 0.32). Under 30,000 rows in all, ANALYZE reads every row: the same
# statistics, and plans, on every run.
READERS = 5 * BATCH_SIZE
SENT, SENDING = 1, 2  # a finished campaign, and one sent up to its middle batch
MIDDLE = READERS // BATCH_SIZE // 2
# Each row inserted in the state the send leaves it in, not updated to it: a heap as dense as
# a ledger's whose freed space later rows took. Updated once, the sparser heap makes the Seq
# Scan dearer, and _OPEN_AFTER's costs what the index does (0.33): a coin toss.
_STATUS = (
    "CASE WHEN c = :sent OR i / :size < :middle THEN 'sent'"
    " WHEN i / :size = :middle THEN 'sending' ELSE 'queued' END"
)


@pytest.fixture(scope="module")
def ledger() -> Iterator[Engine]:
    """A database of its own, migrated, holding the two campaigns' deliveries, vacuumed and
    analyzed as autovacuum leaves them."""
    name = f"mailer_plans_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(
        make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    )
    try:
        upgrade(engine)
        with make_sessions(engine).begin() as session:
            for campaign_id, status in (
                (SENT, CampaignState.SENT),
                (SENDING, CampaignState.SENDING),
            ):
                session.add(
                    Campaign(
                        id=campaign_id,
                        slug=status,
                        subject="s",
                        edition={},
                        status=status,
                        backend="sendgrid",
                    )
                )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(
                text(
                    "INSERT INTO deliveries"
                    " (campaign_id, subscriber_id, batch, status, attempts, provider_id, error)"
                    f" SELECT c, i, i / :size, {_STATUS}, 1, '', ''"
                    " FROM generate_series(1, 2) c, generate_series(0, :readers - 1) i"
                ),
                {"sent": SENT, "size": BATCH_SIZE, "middle": MIDDLE, "readers": READERS},
            )
            connection.execute(text("VACUUM ANALYZE deliveries"))
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _scans(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The node types that read deliveries in ``statement``'s plan for ``parameters``."""
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        return _deliveries_scans(plan.scalar_one()[0]["Plan"])


def _deliveries_scans(plan: dict[str, Any]) -> list[str]:
    found: list[str] = []
    nodes = [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == "deliveries":
            found.append(node["Node Type"])
        nodes.extend(node.get("Plans", []))
    return found


def _asked(engine: Engine, ask: Callable[[Session], object]) -> list[tuple[str, Any]]:
    """The questions ``ask`` puts to the ledger, with the parameters it puts them with."""
    asked: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM deliveries" in statement:
            asked.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with make_sessions(engine).begin() as session:
            ask(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert asked
    return asked


def _open_after(campaign_id: int, batch: int) -> Callable[[Session], object]:
    return lambda session: session.scalar(_OPEN_AFTER, {"campaign_id": campaign_id, "batch": batch})


QUESTIONS = {
    "finish_if_done, finished": lambda session: finish_if_done(session, SENT),
    "finish_if_done, sending": lambda session: finish_if_done(session, SENDING),
    "open after its first batch, finished": _open_after(SENT, 0),
    "open after its first batch, sending": _open_after(SENDING, 0),
    "open after the batch before the one in flight": _open_after(SENDING, MIDDLE - 1),
}


@pytest.mark.parametrize("ask", QUESTIONS.values(), ids=QUESTIONS.keys())
def test_each_question_reads_the_index(ledger: Engine, ask: Callable[[Session], object]) -> None:
    for statement, parameters in _asked(ledger, ask):
        assert set(_scans(ledger, statement, parameters)) == {"Index Only Scan"}, statement


def test_asked_again_and_again_they_still_read_the_index(ledger: Engine) -> None:
    """psycopg prepares a statement at its fifth run, and PostgreSQL may then plan it once for
    any parameters (after five plans for the ones given): every plan, as auto_explain reports
    it, for fifteen runs of each question on one connection."""
    plans: list[dict[str, Any]] = []
    with make_sessions(ledger).begin() as session:
        connection = session.connection()
        connection.exec_driver_sql("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_level = notice", "log_format = json"):
            connection.exec_driver_sql(f"SET LOCAL auto_explain.{setting}")
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.add_notice_handler(
            lambda notice: plans.append(json.loads(notice.message_primary.split("plan:", 1)[1]))
        )
        for ask in QUESTIONS.values():
            for _ in range(15):
                ask(session)
    found = [_deliveries_scans(plan["Plan"]) for plan in plans]
    assert len([scans for scans in found if scans]) >= 15 * len(QUESTIONS)
    assert {scan for scans in found for scan in scans} == {"Index Only Scan"}
