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


@pytest.fixture(scope="session")
def hardened_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A gateway with API keys, tight stream limits and a short idle timeout (tests/gateway/hardened.py)."""
    from tests.gateway.hardened import hardened_server

    yield from hardened_server(tmp_path_factory.mktemp("hardened"))
