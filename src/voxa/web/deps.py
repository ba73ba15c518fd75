"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from voxa.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# The largest integer the index databases hold (SQLite INTEGER, PostgreSQL BIGINT).  A larger
# identifier, offset or limit would overflow the database driver (a 500); bound them with it.
MAX_DB_INT = 2**63 - 1

# A row identifier in a path (``/worklist/{item_id}``): 422 when out of range.
RowId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
