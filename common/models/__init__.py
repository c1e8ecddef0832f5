"""SQLAlchemy models of every durable record, one module per domain.

Importing this package registers every table on ``common.db.Base.metadata``.
"""

from common.models.accounts import AuditEntry, User, UserRole  # noqa: F401
from common.models.calendar import SpecialDay
from common.models.callbacks import Callback
from common.models.calls import Call, CallEvent
from common.models.faq import FaqItem, FaqRevision, FaqUsage, FaqWorkflowEvent  # noqa: F401
from common.models.health import HealthSample
from common.models.reports import (  # noqa: F401
    KpiRollup,
    KpiRollupState,
    KpiTransferRollup,
    Report,
)
from common.models.transcripts import TranscriptPurge, TranscriptSegment

__all__ = ["Call", "CallEvent", "Callback", "HealthSample", "Report", "SpecialDay",
           "TranscriptPurge", "TranscriptSegment"]
