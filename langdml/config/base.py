"""The base of every experiment-config section: unknown keys are errors, assignments validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Upper bounds of sizes that would otherwise fail deep in PIL or the allocator (a typo such as
# an extra digit): image sides in pixels, and embedding sizes.
MAX_IMAGE_SIZE = 4096
MAX_EMBEDDING_DIM = 65536


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
