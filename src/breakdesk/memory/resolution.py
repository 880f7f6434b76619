"""The resolution summary of a finished exception: playbook, steps and their outcomes, human comments.

Built from what the store already holds (the exception's projection, its event stream and, when the tool
runner recorded any, its executions), so it works whatever path resolved the exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from breakdesk.domain.models import DEFAULT_MESSAGE

#: Statuses after which an exception's handling is known and worth remembering.
RESOLVED_STATUSES = frozenset({"RESOLVED", "CLOSED", "FAILED"})
MAX_SUMMARY = 600
MAX_HEADLINE = 160
#: Comments a summary keeps: people's words before machines' reasons, the latest of each first.
MAX_COMMENTS = 5
#: Payload fields that carry a person's words: in a human action's event (`human.close` has `resolution`,
#: what was done about it; `human.comment` has `text`), and in any other stage's.
_HUMAN_KEYS = ("resolution", "text", "comment", "note", "reason")
_OTHER_KEYS = ("comment", "note", "reason")
#: The stock evidence the API recorded for a close or reopen without a reason before it marked such text
#: (`DEFAULT_MESSAGE`): events already stored still hold it, and it is no one's words.
_LEGACY_DEFAULTS = frozenset({
    ("human.close", "closed by a person"),
    ("human.reopen", "reopened by a person"),
})


def _text(value: Any, limit: int = 200) -> str:
    s = " ".join(str(value).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _filled_in(stage: str, decision: Mapping[str, Any], item: Mapping[str, Any], message: str) -> bool:
    """Whether a human action's or approval's evidence `message` is text the system filled in because the
    person wrote nothing: marked so, or (in events stored before the mark) the decision repeated (an
    assignment or approval without a comment, an approval's expiry) or the API's stock wording."""
    data = item.get("data")
    if isinstance(data, dict) and data.get(DEFAULT_MESSAGE):
        return True
    return message == decision.get("decision") or (stage, message) in _LEGACY_DEFAULTS


def resolution_of(
    row: Mapping[str, Any], events: Sequence[Mapping[str, Any]], executions: Sequence[Any] = ()
) -> dict[str, Any]:
    """{"summary", "headline", "status", "playbook", "steps": [{step, tool, status}], "comments": [...]}."""
    status = str(row.get("status"))
    playbook = row.get("playbook_id")
    steps: dict[str, dict[str, Any]] = {}
    comments: list[str] = []
    said: list[str] = []  # a person's own words in a human action (for the headline)
    people: set[str] = set()  # comments a person wrote (human actions, approvals)
    for e in events:
        payload = e.get("payload") or {}
        stage = str(e.get("stage") or "")
        plan = payload.get("plan") if isinstance(payload, dict) else None
        if stage == "resolution" and isinstance(plan, dict):
            playbook = plan.get("playbookId") or playbook
            for s in plan.get("steps") or []:
                if isinstance(s, dict) and s.get("stepId"):
                    steps[str(s["stepId"])] = {"step": s["stepId"], "tool": s.get("tool"), "status": s.get("status")}
        if isinstance(payload, dict) and stage != "resolution":
            # what a person wrote: the resolution stated when closing, a comment's text, notes and reasons
            spoken: str | None = None  # (per action, its first key: a close's resolution before its reason)
            for key in _HUMAN_KEYS if stage.startswith("human") else _OTHER_KEYS:
                if isinstance(payload.get(key), str) and payload[key].strip():
                    comments.append(_text(payload[key]))
                    if stage.startswith("human"):
                        spoken = spoken or comments[-1]
                        people.add(comments[-1])
            if spoken is not None:
                said.append(spoken)
        decision = e.get("decision") or {}
        if stage.startswith(("human", "approval")) and isinstance(decision, dict):
            for ev in decision.get("evidence") or []:
                msg = ev.get("message") if isinstance(ev, dict) else None
                if isinstance(msg, str) and msg.strip():
                    comments.append(_text(msg))
                    if not _filled_in(stage, decision, ev, msg):  # (stock text stays, as a machine's)
                        people.add(comments[-1])
    for x in executions:  # settled tool runs override the planned status
        final = getattr(x, "final", True)
        step_id = getattr(x, "step_id", None)
        if step_id and final:
            steps[str(step_id)] = {"step": step_id, "tool": getattr(x, "tool", None), "status": getattr(x, "status", None)}
    comments = list(dict.fromkeys(comments))
    if len(comments) > MAX_COMMENTS:
        # Not simply the first five: earlier notes (step reasons, a discussion) would push out what the person
        # who closed the exception wrote. People's words first, the latest of each kind, in written order.
        keep = sorted(range(len(comments)), key=lambda i: (comments[i] in people, i))[-MAX_COMMENTS:]
        comments = [comments[i] for i in sorted(keep)]
    parts = [f"{status.lower()}"]
    if playbook:
        parts.append(f"playbook {playbook}")
    if steps:
        parts.append(", ".join(
            f"{s['step']}{' (' + str(s['tool']) + ')' if s.get('tool') else ''} {str(s.get('status') or '').lower()}".strip()
            for s in steps.values()
        ))
    if comments:
        parts.append("comments: " + " | ".join(comments))
    summary = _text("; ".join(parts), MAX_SUMMARY)
    # What triage shows of a similar case (five per exception, in its event and audit entry): how it ended,
    # by which playbook, and the last thing a person said about it, not every step and reason.
    head = [status.lower()] + ([f"playbook {playbook}"] if playbook else []) + ([f'"{said[-1]}"'] if said else [])
    return {"summary": summary, "headline": _text(", ".join(head), MAX_HEADLINE), "status": status,
            "playbook": playbook, "steps": list(steps.values()), "comments": comments}


def resolution_headline(resolution: Mapping[str, Any] | None) -> str | None:
    """How a case ended, in a few words (`headline`: status, playbook, what a person said): what triage
    evidence and recurrence show, k times per exception, where the whole summary would not fit. A resolution
    indexed before resolutions had a headline shows the start of its summary."""
    if not resolution:
        return None
    if resolution.get("headline"):
        return str(resolution["headline"])
    summary = resolution.get("summary")
    return _text(summary, MAX_HEADLINE) if summary else None
