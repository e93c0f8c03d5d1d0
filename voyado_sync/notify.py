"""Alerts: one JSON message to a Slack-compatible incoming webhook when a run needs a person.

``VOYADO_SYNC_NOTIFY_URL`` (environment only: the URL carries a token) receives a message when

==============  =================================================================================
event           when
==============  =================================================================================
``cannot_run``  the run could not run (exit 2): configuration, manifest, warehouse, ledger lock,
                authentication
``stopped``     the schema gate stopped one or more models (exit 2); the other models ran
``rejected``    it ran, but rows were rejected or failed, or it was interrupted (exit 1); the
                causes are grouped
``recovered``   the first clean run (exit 0) after a run that was not clean
==============  =================================================================================

and never otherwise: a clean run after a clean run, and every dry run, stay quiet. The message is
``{"text": ...}`` (what Slack shows) plus a ``voyado_sync`` object with the same facts as fields.
Every string in it is redacted: neither the API key nor the webhook's URL can appear.

Posting never raises and never takes longer than :data:`TIMEOUT` seconds in all: a webhook that
fails, answers an error or hangs is reported in the returned :class:`AlertOutcome`, and the sync's
exit code does not change.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from voyado_sync import __version__

#: Seconds a webhook gets, from connecting to its answer, before the run gives up on it.
TIMEOUT = 5.0
_MAX_TEXT = 3000  # Slack truncates longer texts in a notification anyway


@dataclass(frozen=True)
class Alert:
    """One message to send: its event and the webhook's JSON body."""

    event: str
    body: dict[str, Any]


@dataclass(frozen=True)
class AlertOutcome:
    """What happened to an alert. ``error`` says why the webhook did not take it."""

    event: str
    sent: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "sent": self.sent, "error": self.error}


def was_clean(document: Mapping[str, Any]) -> bool:
    """Whether a run's document (``run --json``) needs nobody's attention: exit code 0."""
    return document.get("exit_code") == 0


def alert_for(
    document: Mapping[str, Any],
    *,
    previous_clean: bool | None,
    project: str = "",
    secrets: Sequence[str] = (),
) -> Alert | None:
    """The alert a run's document calls for, or None. Pure.

    ``document`` is what ``run --json`` prints (with ``run_id``); ``previous_clean`` whether the
    run before it was clean (None: unknown, as on the very first run).
    """
    if document.get("dry_run"):
        return None
    code = document.get("exit_code")
    models: list[Mapping[str, Any]] = list(document.get("models") or [])
    run_id = document.get("run_id")
    where = f" ({project})" if project else ""
    fields: dict[str, Any] = {
        "run_id": run_id,
        "exit_code": code,
        "project": project or None,
        "warehouse": document.get("warehouse") or None,
        "version": __version__,
    }
    error = document.get("error")
    stopped = [m for m in models if m.get("error")]
    if code == 2 and (error or not stopped):
        message = (error or {}).get("message") or "unknown error"
        kind = (error or {}).get("kind") or "VoyadoSyncError"
        text = f":rotating_light: voyado-sync could not run{where}: {kind}: {message}"
        fields.update(event="cannot_run", error={"kind": kind, "message": message})
        fields["models"] = [_counts(m) for m in models]
    elif code == 2:
        lines = [f"• {m.get('model')}: {_first_line(str(m.get('error')))}" for m in stopped]
        text = (
            f":octagonal_sign: voyado-sync stopped {len(stopped)} model(s){where}, run {run_id}; "
            "nothing was sent for them:\n" + "\n".join(lines)
        )
        fields.update(
            event="stopped",
            stopped=[{"model": m.get("model"), "error": m.get("error")} for m in stopped],
            models=[_counts(m) for m in models],
        )
    elif code == 1:
        rejected = sum(int(m.get("rejected") or 0) for m in models)
        failed = sum(int(m.get("failed") or 0) for m in models)
        unverified = sum(int(m.get("unverified") or 0) for m in models)
        causes = _causes(models)
        parts = [f"{rejected} row(s) rejected", f"{failed} failed"]
        if unverified:
            parts.append(f"{unverified} unverified (outcome unknown; looked up again next run)")
        if document.get("interrupted"):
            parts.append("interrupted")
        lines = [
            f"• {c['rows']} rows: {c['cause']} ({', '.join(c['models'])})" for c in causes[:10]
        ] + [
            f"• {m.get('failed')} failed in {m.get('model')} (retried on the next run)"
            for m in models
            if m.get("failed")
        ]
        text = (
            f":warning: voyado-sync run {run_id}{where}: {', '.join(parts)}. "
            "See why: voyado-sync rejected" + ("\n" + "\n".join(lines) if lines else "")
        )
        fields.update(
            event="rejected",
            rejected=rejected,
            failed=failed,
            unverified=unverified,
            interrupted=bool(document.get("interrupted")),
            causes=causes,
            models=[
                _counts(m)
                for m in models
                if m.get("rejected") or m.get("failed") or m.get("unverified")
            ],
        )
    elif code == 0 and previous_clean is False:
        sent = sum(int(m.get("sent") or 0) for m in models)
        text = (
            f":white_check_mark: voyado-sync recovered{where}: run {run_id} was clean "
            f"({sent} sent)."
        )
        fields.update(event="recovered", models=[_counts(m) for m in models])
    else:
        return None
    body = {"text": text[:_MAX_TEXT], "voyado_sync": fields}
    return Alert(event=str(fields["event"]), body=redact(body, secrets))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _counts(model: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "model",
        "schema_id",
        "sent",
        "rejected",
        "failed",
        "unverified",
        "contact_not_found",
        "error",
    )
    return {k: model.get(k) for k in keys}


def _causes(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rejected rows grouped by cause across models, the largest first."""
    grouped: dict[str, dict[str, Any]] = {}
    for m in models:
        reasons = m.get("reasons") or []
        # --json lists causes as {cause, status, count, examples}; a mapping cause -> rows is
        # read too.
        pairs = (
            [(r["cause"], r["count"]) for r in reasons]
            if isinstance(reasons, list)
            else list(reasons.items())
        )
        for cause, rows in pairs:
            entry = grouped.setdefault(cause, {"cause": cause, "rows": 0, "models": []})
            entry["rows"] += int(rows)
            if m.get("model") not in entry["models"]:
                entry["models"].append(m.get("model"))
    return sorted(grouped.values(), key=lambda c: (-c["rows"], c["cause"]))


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret replaced by ``***`` in every string inside it."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, Mapping):
        return {k: redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def post(url: str, alert: Alert, *, timeout: float = TIMEOUT) -> AlertOutcome:
    """POST the alert; never raise, never wait longer than ``timeout`` seconds in all.

    The request runs on a daemon thread: httpx's timeouts bound each phase (connect, write,
    read), and the join bounds the whole, so a webhook that trickles its answer cannot hold the
    run either. Error texts name what went wrong, never the URL (it holds a token).
    """
    outcome: list[AlertOutcome] = []

    def send() -> None:
        outcome.append(_send(url, alert, timeout))

    thread = threading.Thread(target=send, name="voyado-sync-alert", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome:
        return outcome[0]
    return AlertOutcome(alert.event, False, f"the webhook did not answer within {timeout:g} s")


def _send(url: str, alert: Alert, timeout: float) -> AlertOutcome:
    import httpx

    try:
        response = httpx.post(
            url,
            content=json.dumps(alert.body, default=str).encode(),
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"voyado-sync/{__version__}",
            },
            timeout=timeout,
        )
    except httpx.TimeoutException:
        return AlertOutcome(alert.event, False, f"the webhook did not answer within {timeout:g} s")
    except httpx.InvalidURL:
        return AlertOutcome(alert.event, False, "VOYADO_SYNC_NOTIFY_URL is not a valid URL")
    except httpx.HTTPError as exc:
        return AlertOutcome(
            alert.event, False, f"the webhook could not be reached ({type(exc).__name__})"
        )
    except Exception as exc:  # a webhook must never fail the sync
        return AlertOutcome(
            alert.event, False, f"the webhook could not be called ({type(exc).__name__})"
        )
    if response.status_code >= 300:
        return AlertOutcome(alert.event, False, f"the webhook answered HTTP {response.status_code}")
    return AlertOutcome(alert.event, True)
