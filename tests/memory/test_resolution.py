"""The resolution summary a finished exception leaves in the memory: playbook, step outcomes, people's words."""

from __future__ import annotations

from types import SimpleNamespace

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
