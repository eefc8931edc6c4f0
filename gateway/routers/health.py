"""Operational endpoints: /health, /models, /config, /languages."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request

from gateway import __version__
from gateway.deps import EnginesDep, GpuDep, MetricsDep, SettingsDep
from gateway.engines.base import ModelState
from gateway.engines.languages import language_name

router = APIRouter(tags=["operations"])


def _model_dicts(engines: EnginesDep) -> list[dict[str, object]]:
    return [
        {
            "role": m.role,
            "id": m.id,
            "engine": m.engine,
            "state": m.state.value,
            **({"detail": m.detail} if m.detail else {}),
        }
        for m in engines.models()
    ]


@router.get("/health", summary="Readiness, per-engine state, uptime, version and GPU statistics")
async def health(request: Request, engines: EnginesDep, gpu: GpuDep, metrics: MetricsDep) -> JSONResponse:
    stats = gpu.read()
    metrics.refresh(stats, engines.models())
    components = {
        m.role: {"ready": m.state is ModelState.READY, "state": m.state.value, "model": m.id}
        for m in engines.models()
    }
    if engines.ready:
        status, code = "ok", 200
    elif engines.loading:
        status, code = "loading", 503
    else:
        status, code = "unavailable", 503
    body = {
        "status": status,
        "engine": engines.kind,
        "version": __version__,
        "uptime_s": round(time.monotonic() - request.app.state.started_at, 3),
        "components": components,
        "gpu": stats.as_dict(),
    }
    return JSONResponse(body, status_code=code)


@router.get("/models", summary="The model behind each role (omni / tts / asr) and its state")
async def models(engines: EnginesDep) -> dict[str, object]:
    return {"engine": engines.kind, "models": _model_dicts(engines)}


@router.get("/config", summary="Effective configuration, secrets redacted")
async def config(settings: SettingsDep) -> dict[str, object]:
    return {"config": settings.redacted()}


@router.get("/languages", summary="Languages the active engines really support, per capability")
async def languages(engines: EnginesDep) -> dict[str, object]:
    def describe(codes: object) -> list[dict[str, str]]:
        return [{"code": c, "name": language_name(c)} for c in codes]  # type: ignore[attr-defined]

    out: dict[str, object] = {
        "tts": describe(engines.synthesizer.languages()),
        "asr": describe(engines.transcriber.languages()),
    }
    if engines.responder is not None:
        out["voice"] = describe(engines.responder.languages())
    voices = [
        {"id": v.id, "name": v.name, "language": v.language, "aliases": list(v.aliases)}
        for v in engines.synthesizer.voices()
    ]
    return {"engine": engines.kind, "languages": out, "voices": voices}
