"""One writer of a campaign's status, atomic: two processes never both move a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from mailer.runtime import Runtime
from mailer.sending.dispatch import cancel, pause, progress, resume, start
from mailer.store.ledger import Campaign, CampaignState, IllegalTransition, move
from tests import test_dispatch
from tests.test_dispatch import HeldQueue, configure, new_campaign, seed, status_of

rt = test_dispatch.rt  # the fixture: a runtime on each test database


def test_a_resume_racing_a_cancel_never_revives_the_campaign(rt: Runtime, tmp_path: Path) -> None:
    """The cancel (another process) commits between the resume's look at the campaign and
    its write: the resume must find it cancelled, not send it again."""
    seed(rt, confirmed=3)
    campaign_id = new_campaign(rt, tmp_path)
    assert start(rt, campaign_id, HeldQueue())
    pause(rt, campaign_id)
    other = configure(rt)
    raced = []

    def cancel_first(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE campaigns SET status") and not raced:
            raced.append(statement)
            cancel(other, campaign_id)

    event.listen(rt.engine, "before_cursor_execute", cancel_first)
    with pytest.raises(IllegalTransition, match="is cancelled"):
        resume(rt, campaign_id, HeldQueue())
    assert raced and status_of(rt, campaign_id) == CampaignState.CANCELLED


def test_the_writer_keeps_the_table_and_the_times(rt: Runtime, tmp_path: Path) -> None:
    campaign_id = new_campaign(rt, tmp_path)
    with rt.sessions.begin() as session:
        move(session, campaign_id, CampaignState.SENDING)
        move(session, campaign_id, CampaignState.UNSETTLED)
    first = progress(rt, campaign_id)
    assert first.started_at is not None and first.finished_at is not None
    with rt.sessions.begin() as session:
        move(session, campaign_id, CampaignState.SENT)  # keeps the end it had
        with pytest.raises(IllegalTransition, match=f"campaign {campaign_id} is sent"):
            move(session, campaign_id, CampaignState.SENDING)
        assert not move(session, campaign_id, CampaignState.PAUSED, strict=False)
    sent = progress(rt, campaign_id)
    assert (sent.status, sent.started_at, sent.finished_at) == (
        "sent",
        first.started_at,
        first.finished_at,
    )


def test_a_row_in_the_retired_failed_state_reads_and_stays(rt: Runtime, tmp_path: Path) -> None:
    campaign_id = new_campaign(rt, tmp_path)
    with rt.sessions.begin() as session:
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="failed"))
    assert progress(rt, campaign_id).status == "failed"
    with pytest.raises(IllegalTransition, match="is failed"):
        resume(rt, campaign_id, HeldQueue())
    assert status_of(rt, campaign_id) == "failed"
