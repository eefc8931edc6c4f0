from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import ServerProcess


@pytest.fixture(scope="session")
def gateway() -> Iterator[ServerProcess]:
    """One real gateway (embedded engine) for the whole session: uvicorn on a free port."""
    server = ServerProcess("serve")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
