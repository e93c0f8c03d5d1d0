"""What a run hands back: one :class:`ModelResult` per model inside a :class:`SyncResult`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voyado_sync.reasons import Causes, cause
from voyado_sync.sync.values import Settled

#: progress(model, rows done, rows to do)
ProgressCallback = Callable[[str, int, int], None]


def reason_class(reason: str) -> str:
    """The grouping key for the summary: the reason without its values (one cause, one line)."""
    return cause(reason)


@dataclass
class ModelResult:
    """What one model's sync did. Counts are rows of the model unless said otherwise."""

    model: str
    schema_id: str
    selected: int = 0
    already_sent: int = 0
    sent: int = 0
    rejected: int = 0
    failed: int = 0
    waiting: int = 0
    #: Pending rows this run did not send because it stopped first (journaled or not yet
    #: read): not failures, sent on the next run.
    not_sent: int = 0
    #: Rows left in flight: Voyado may or may not hold them, and it could not be checked yet.
    #: Looked up again by the next run; never resent without knowing.
    unverified: int = 0
    previously_rejected: int = 0
    reconciled: int = 0
    #: Rows recorded as already there by the first run's policy (never sent).
    baselined: int = 0
    #: Mirror: interactions deleted because their row left the model.
    deleted: int = 0
    #: Mirror: rows whose content changed: old interaction deleted (the new one is in sent).
    replaced: int = 0
    #: Which guard stopped the model before anything was sent: None, "first_run",
    #: "mass_send" or "mass_delete" (its message is in ``error``).
    stopped_by_guard: str | None = None
    #: Dry run: samples of rows that would be baselined, deleted and replaced.
    would: dict[str, list[str]] = field(default_factory=dict)
    schema_created: bool = False
    lookups: int = 0
    lookups_cached: int = 0
    #: Rows whose contact identifier was changed before lookup, by kind of change.
    normalised: dict[str, int] = field(default_factory=dict)
    #: Cached contact ids dropped because Voyado answered a POST with 404 ContactNotFound.
    invalidated: int = 0
    error: str | None = None
    #: Why dbt's last build holds this model back (not synced), or None.
    skipped_by_dbt: str | None = None
    #: The configuration problems that kept this model from syncing ({model, key, message}).
    problems: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Rejected and failed rows of this run, grouped by cause (see voyado_sync.reasons).
    reasons: Causes = field(default_factory=Causes)

    def count_normalised(self, change: str | None) -> None:
        if change:
            self.normalised[change] = self.normalised.get(change, 0) + 1

    def add(self, settled: Settled) -> None:
        """Count one settled row (or group of duplicate rows)."""
        if settled.tally == "sent":
            self.sent += settled.rows
        elif settled.tally == "rejected":
            self.rejected += settled.rows
        elif settled.tally == "failed":
            self.failed += settled.rows
        elif settled.tally == "waiting":
            self.waiting += settled.rows
        self.reconciled += int(settled.reconciled)
        # Every rejected or failed row is grouped, also those settled without a
        # grouped_reason (a contact still absent after its retry days, several matches).
        reason = settled.grouped_reason
        if reason is None and settled.tally in ("rejected", "failed"):
            reason = settled.delivery.reason
        if reason is not None:
            status = "failed" if settled.tally == "failed" else "rejected"
            self.reasons.add(
                reason, settled.delivery.row_key_display, status=status, rows=settled.rows
            )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "schema_id": self.schema_id,
            "selected": self.selected,
            "already_sent": self.already_sent,
            "sent": self.sent,
            "rejected": self.rejected,
            "failed": self.failed,
            "contact_not_found": self.waiting,
            "not_sent": self.not_sent,
            "unverified": self.unverified,
            "previously_rejected": self.previously_rejected,
            "reconciled": self.reconciled,
            "baselined": self.baselined,
            "deleted": self.deleted,
            "replaced": self.replaced,
            "stopped_by_guard": self.stopped_by_guard,
            "schema_created": self.schema_created,
            "contact_lookups": self.lookups,
            "contact_lookups_cached": self.lookups_cached,
            "contacts_normalised": dict(self.normalised),
            "contact_ids_invalidated": self.invalidated,
            "error": self.error,
            "skipped_by_dbt": self.skipped_by_dbt,
        }
        if self.problems:
            out["problems"] = self.problems
        if self.samples:
            out["samples"] = self.samples
        if self.would:
            out["would_samples"] = self.would
        if self.reasons:
            out["reasons"] = [c.as_dict() for c in self.reasons.ordered()]
        return out


@dataclass
class SyncResult:
    """The typed result of one run."""

    run_id: str
    dry_run: bool
    #: The models that ran.
    synced: list[ModelResult]
    warehouse: str = ""
    interrupted: bool = False
    fatal: str | None = None
    #: The error class of ``fatal`` (the ``kind`` of the JSON error envelope).
    fatal_kind: str | None = None
    requests: dict[str, Any] = field(default_factory=dict)
    #: Things a person should know that did not stop the run.
    warnings: list[str] = field(default_factory=list)
    #: Configuration problems outside the synced models ({model, key, message}): a meta key
    #: that looks like a typo of voyado. Exit code 2.
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: Selected models dbt's last build failed, skipped or failed tests on: not synced (exit 1).
    held: list[ModelResult] = field(default_factory=list)
    #: Selected models with a configuration problem: reported, not synced (exit code 2).
    broken: list[ModelResult] = field(default_factory=list)

    @property
    def models(self) -> list[ModelResult]:
        """Every selected model: those that ran, then those that could not."""
        return [*self.synced, *self.held, *self.broken]

    @property
    def exit_code(self) -> int:
        if self.fatal or self.problems or any(m.error for m in self.models):
            return 2
        # Rows waiting for their contact are neither rejected nor failed: they are retried by
        # design on later runs, so they alone do not fail a scheduled job.
        if self.interrupted or any(
            m.rejected or m.failed or m.unverified or m.skipped_by_dbt for m in self.models
        ):
            return 1
        return 0

    def totals(self) -> dict[str, int]:
        return {
            key: sum(getattr(m, key) for m in self.models)
            for key in ("selected", "already_sent", "sent", "rejected", "failed")
        }

    def as_dict(self) -> dict[str, Any]:
        error = (
            {"message": self.fatal, "kind": self.fatal_kind or "VoyadoSyncError"}
            if self.fatal
            else None
        )
        return {
            "exit_code": self.exit_code,
            "error": error,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "warehouse": self.warehouse,
            "interrupted": self.interrupted,
            "models": [m.as_dict() for m in self.models],
            "requests": self.requests,
            "warnings": self.warnings,
            "problems": self.problems,
        }
