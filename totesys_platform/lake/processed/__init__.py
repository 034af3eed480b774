"""The processed zone's star-schema transformations: plain Arrow functions with incremental state."""

from totesys_platform.lake.processed.transforms import (
    COLUMN_LINEAGE,
    PROCESSED_SPECS,
    Builder,
    ProcessedSpec,
    State,
)
from totesys_platform.lake.processed.validation import BadInputError

__all__ = ["COLUMN_LINEAGE", "PROCESSED_SPECS", "BadInputError", "Builder", "ProcessedSpec", "State"]
