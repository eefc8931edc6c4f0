"""Accessors for what the app holds; routers depend on these, never on globals."""

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from gateway.engines.registry import Engines
from gateway.gpu import GpuMonitor
from gateway.metrics import Metrics
from gateway.settings import Settings


def engines(conn: HTTPConnection) -> Engines:
    return conn.app.state.engines


def settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


def metrics(conn: HTTPConnection) -> Metrics:
    return conn.app.state.metrics


def gpu(conn: HTTPConnection) -> GpuMonitor:
    return conn.app.state.gpu


EnginesDep = Annotated[Engines, Depends(engines)]
SettingsDep = Annotated[Settings, Depends(settings)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
GpuDep = Annotated[GpuMonitor, Depends(gpu)]
