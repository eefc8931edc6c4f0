"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.deps import EnginesDep, GpuDep, MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(metrics: MetricsDep, gpu: GpuDep, engines: EnginesDep) -> Response:
    metrics.refresh(gpu.read(), engines.models())
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
