"""The resolution summary a finished exception leaves in the memory: playbook, step outcomes, people's words."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from breakdesk.memory.resolution import MAX_HEADLINE, resolution_headline, resolution_of


def test_summary_names_the_playbook_the_settled_steps_and_what_people_wrote() -> None:
    row = {"status": "CLOSED", "playbook_id": "PB_BREAK"}
    events = [
        {"stage": "resolution", "payload": {"plan": {"playbookId": "PB_BREAK", "steps": [
            {"stepId": "fetch", "tool": "getOrder", "status": "PLANNED"},
            {"stepId": "fix", "tool": "fixOrder", "status": "PLANNED", "comment": "not a person's"}]}},
         "decision": {"evidence": [{"message": "plan PB_BREAK"}]}},
        {"stage": "human.comment", "payload": {"action": "comment", "text": "called the bank"},
         "decision": {"evidence": [{"message": "comment by dana"}]}},
        {"stage": "human.close", "payload": {"action": "close", "previousStatus": "ESCALATED", "reason": "",
                                             "resolution": "ledger entry  reversed"},
         "decision": {"evidence": [{"message": "closed by a person"}]}},
    ]
    executions = [SimpleNamespace(step_id="fetch", tool="getOrder", status="SUCCEEDED", final=True)]
    res = resolution_of(row, events, executions)
    assert res["playbook"] == "PB_BREAK" and res["status"] == "CLOSED"
    assert res["steps"] == [{"step": "fetch", "tool": "getOrder", "status": "SUCCEEDED"},
                            {"step": "fix", "tool": "fixOrder", "status": "PLANNED"}]
    assert res["comments"] == ["called the bank", "comment by dana", "ledger entry reversed", "closed by a person"]
    assert res["summary"] == ("closed; playbook PB_BREAK; fetch (getOrder) succeeded, fix (fixOrder) planned; "
                              "comments: called the bank | comment by dana | ledger entry reversed | closed by a person")
    # what triage shows of it: how it ended, by which playbook, the last thing a person said
    assert res["headline"] == 'closed, playbook PB_BREAK, "ledger entry reversed"'
    assert resolution_headline(res) == res["headline"]


def test_a_machine_stage_contributes_its_reasons_but_not_a_payload_text() -> None:
    events = [{"stage": "execution", "payload": {"reason": "tool timed out", "text": "raw tool output"}}]
    res = resolution_of({"status": "FAILED", "playbook_id": None}, events)
    assert res["comments"] == ["tool timed out"] and res["summary"] == "failed; comments: tool timed out"
    assert res["headline"] == "failed"  # a machine's reason is not what a person said


def test_a_resolution_indexed_before_headlines_shows_the_start_of_its_summary() -> None:
    assert resolution_headline({"summary": "resolved; playbook P"}) == "resolved; playbook P"
    long = resolution_headline({"summary": "resolved; " + "step ok, " * 40})
    assert long is not None and len(long) == MAX_HEADLINE and long.endswith("...")
    assert resolution_headline(None) is None and resolution_headline({}) is None


def test_the_headline_of_a_close_says_what_was_done_before_why() -> None:
    """A close stating both what was done (`resolution`) and why (`reason`): the headline quotes the first."""
    events = [{"stage": "human.close", "payload": {"action": "close", "resolution": "redelivered the securities",
                                                   "reason": "counterparty confirmed"}}]
    res = resolution_of({"status": "CLOSED"}, events)
    assert res["headline"] == 'closed, "redelivered the securities"'
    assert res["comments"] == ["redelivered the securities", "counterparty confirmed"]


def _chatter(n: int) -> list[dict[str, Any]]:
    """`n` comments as the API stores them: the text in the payload and, again, as the decision's evidence."""
    texts = [f"chased them ({i})" for i in range(n)]
    return [{"stage": "human.comment", "payload": {"action": "comment", "text": text},
             "decision": {"decision": "comment", "evidence": [{"kind": "human", "message": text}]}}
            for text in texts]


def test_stock_wording_of_a_stored_close_or_reopen_is_not_a_persons_words() -> None:
    """Events already stored hold the API's stock text as the evidence of a close or reopen without a reason:
    it must not count as a person's words, neither quoted in the headline nor pushing real comments out."""
    events = [
        *_chatter(5),
        {"stage": "human.close", "payload": {"action": "close", "previousStatus": "ESCALATED", "reason": "",
                                             "resolution": None},
         "decision": {"decision": "closed",
                      "evidence": [{"kind": "human", "message": "closed by a person"}]}},
        {"stage": "human.reopen", "payload": {"action": "reopen", "previousStatus": "CLOSED", "reason": ""},
         "decision": {"decision": "reopened",
                      "evidence": [{"kind": "human", "message": "reopened by a person"}]}},
    ]
    res = resolution_of({"status": "CLOSED"}, events)
    assert res["comments"] == [f"chased them ({i})" for i in range(5)], res["comments"]
    assert res["headline"] == 'closed, "chased them (4)"'
    alone = resolution_of({"status": "CLOSED"}, events[-2:])
    assert alone["headline"] == "closed"  # the stock text stays a comment, as a machine's reason would
    assert alone["comments"] == ["closed by a person", "reopened by a person"]


def test_text_the_system_filled_in_for_assign_and_approvals_is_not_a_persons_words() -> None:
    """An assignment or approval without a comment, stored before defaults were marked, has its decision as
    its evidence; one stored since has the default marked (`data.defaultMessage`); an expiry is no person."""
    def approval(decision: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        item = {"kind": "approval", "message": message, "ref": "A-1", **({"data": data} if data else {})}
        return {"stage": "approval", "payload": {"approvalId": "A-1", "scope": "plan"},
                "decision": {"decision": decision, "evidence": [item]}}

    events = [
        *_chatter(4),
        {"stage": "human.assign", "payload": {"action": "assign", "assignee": "dana", "previous": None},
         "decision": {"decision": "assigned to dana",
                      "evidence": [{"kind": "human", "message": "assigned to dana"}]}},
        approval("approval 1 of 2 by bob", "approval 1 of 2 by bob"),
        approval("approved by carol", "approved by carol", {"defaultMessage": True}),
        approval("approval A-1 expired at 2026-05-05T09:00:00Z without a decision",
                 "approval A-1 expired at 2026-05-05T09:00:00Z without a decision"),
        approval("approved by erin", "the counterparty confirmed"),  # erin's own words
    ]
    res = resolution_of({"status": "RESOLVED"}, events)
    assert res["comments"] == [f"chased them ({i})" for i in range(4)] + ["the counterparty confirmed"]
    assert res["headline"] == 'resolved, "chased them (3)"'


def test_a_default_marked_by_the_api_is_not_a_persons_words() -> None:
    events = [
        *_chatter(5),
        {"stage": "human.close", "payload": {"action": "close", "previousStatus": "ESCALATED", "reason": ""},
         "decision": {"decision": "closed", "evidence": [
             {"kind": "human", "message": "closed, nothing said", "data": {"defaultMessage": True}}]}},
    ]
    res = resolution_of({"status": "CLOSED"}, events)
    assert res["comments"] == [f"chased them ({i})" for i in range(5)], res["comments"]
