"""Reading failures of the Python SDK (`automator67`) in tests: the typed error a call raises."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest
from automator67.errors import ApiError


async def api_error(call: Awaitable[Any]) -> ApiError:
    """Awaits `call`, which must fail, and returns its typed error."""
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value
