"""Fixtures for the operator's integration tests: ONE real control plane (scripts/k8s) and one operator
process under a ServiceAccount bound to exactly the operator's RBAC rules, shared by the scenarios of
test_integration.py (module scope: stopped as soon as that module is done, not at the end of the session)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.operator.harness import Api, ConflictProxy, OperatorProcess, Plane, operator_kubeconfig

_ns_counter = itertools.count()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("k8s")
    p = Plane(root / "plane")
    # No skip: missing binaries are built, and a failed build fails the tests (CI builds them in
    # scripts/setup.d/50-k8s.sh beforehand).
    p.ensure_binaries()
    p.up()
    try:
        yield p
    finally:
        p.down()


@pytest.fixture(scope="module")
def admin(plane: Plane) -> Api:
    return plane.admin()


@pytest.fixture(scope="module")
def proxy(plane: Plane, admin: Api) -> Iterator[ConflictProxy]:
    px = ConflictProxy(plane.api_url, plane.ca, admin)
    px.start()
    yield px
    px.stop()


@pytest.fixture(scope="module")
def operator(
    plane: Plane, admin: Api, proxy: ConflictProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    d = tmp_path_factory.mktemp("operator")
    kubeconfig = operator_kubeconfig(admin, proxy.url, d / "kubeconfig")
    op = OperatorProcess(kubeconfig, d / "operator.log", resync=3.0)
    try:
        op.wait_ready()
        yield op
    finally:
        op.stop()


@pytest.fixture
def ns(admin: Api, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t{next(_ns_counter)}-{request.node.name.lower().replace('_', '-')[:40].strip('-')}"
    admin.ns(name)
    yield name
    admin.delete(f"/api/v1/namespaces/{name}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    # on failure, show what the operator said
    report = yield
    if report.failed and "operator" in getattr(item, "fixturenames", ()):
        op = item.funcargs.get("operator")
        if isinstance(op, OperatorProcess):
            report.sections.append(("operator log (tail)", op.tail(80)))
    return report
