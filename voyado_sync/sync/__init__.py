"""The sync as named stages, conducted by :func:`run`.

=================  ===========================================================================
stage              module
=================  ===========================================================================
load the project   :mod:`voyado_sync.project` (shared by every command)
schema gate        :mod:`.schema_gate`
recover in flight  :mod:`.recover`
stage the diff     :mod:`.stage`
prepare rows       :mod:`.prepare`
resolve contacts   :mod:`.contacts`
deliver            :mod:`.deliver`
merged contacts    :mod:`.merged`
settle             :mod:`.settle`
one model          :mod:`.pipeline`
the run            :mod:`.runner`
=================  ===========================================================================

See docs/architecture.md for the picture.
"""

from __future__ import annotations

from voyado_sync.settings import RunOptions
from voyado_sync.sync.result import ModelResult, ProgressCallback, SyncResult
from voyado_sync.sync.runner import run

__all__ = ["ModelResult", "ProgressCallback", "RunOptions", "SyncResult", "run"]
