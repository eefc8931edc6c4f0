"""Spec defaulting (the CRD schema's own defaults, applied the way the apiserver does) and the semantic
checks the schema cannot express. Pure functions."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from voice_operator import defaults as d
from voice_operator.crd import spec_schema


@dataclass(frozen=True)
class SpecError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidSpec(ValueError):
    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _default(node: Any, schema: dict[str, Any]) -> Any:
    """Structural-schema defaulting: a missing property with a default gets it, then recurse into what is
    present. Same rule as the apiserver, so `render -f` of a raw file matches what the cluster stores."""
    if isinstance(node, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
        for key, value in node.items():
            if key in props:
                node[key] = _default(value, props[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                node[key] = _default(value, schema["additionalProperties"])
    elif isinstance(node, list) and "items" in schema:
        return [_default(v, schema["items"]) for v in node]
    return node


_SPEC_SCHEMA = spec_schema()


def with_defaults(spec: dict[str, Any] | None) -> dict[str, Any]:
    out = _default(copy.deepcopy(spec or {}), _SPEC_SCHEMA)
    # gpu blocks have no schema default on purpose (a cpu resource must not grow GPU fields); in gpu mode
    # each model server gets one GPU with the seed's memory share.
    if out["mode"] == "gpu":
        for comp in ("omni", "tts"):
            out[comp]["gpu"] = _default(
                out[comp].get("gpu") or {}, _SPEC_SCHEMA["properties"][comp]["properties"]["gpu"]
            )
    return out


def validate(spec: dict[str, Any]) -> list[SpecError]:
    """Semantic checks on a defaulted spec. Returns every problem, each naming its field."""
    errs: list[SpecError] = []
    mode = spec["mode"]
    engine = spec["gateway"]["engine"]
    if engine not in d.ENGINES:
        errs.append(
            SpecError("spec.gateway.engine", f"unknown engine {engine!r}; known: {', '.join(d.ENGINES)}")
        )
    if spec["omni"]["port"] == spec["tts"]["port"]:
        errs.append(
            SpecError(
                "spec.tts.port",
                f"equals spec.omni.port ({spec['omni']['port']}); the two model servers need different ports",
            )
        )
    for comp in ("omni", "tts"):
        block = spec[comp]
        if mode == "cpu":
            if "gpu" in block:
                errs.append(SpecError(f"spec.{comp}.gpu", "GPU settings are not allowed in cpu mode"))
            if "stageMemoryShares" in block:
                errs.append(
                    SpecError(f"spec.{comp}.stageMemoryShares", "stage layout applies to gpu mode only")
                )
            for res_kind in ("limits", "requests"):
                for res in (block.get("resources") or {}).get(res_kind, {}) or {}:
                    if "gpu" in res:
                        errs.append(
                            SpecError(
                                f"spec.{comp}.resources.{res_kind}.{res}",
                                "GPU resources are not allowed in cpu mode",
                            )
                        )
        shares = block.get("stageMemoryShares")
        stages = 3 if comp == "omni" else 2
        if shares is not None and len(shares) != stages:
            errs.append(
                SpecError(
                    f"spec.{comp}.stageMemoryShares",
                    f"needs {stages} entries (one per pipeline stage), got {len(shares)}",
                )
            )
    for i, voice in enumerate(spec["tts"].get("voices") or []):
        sources = [k for k in ("configMapKeyRef", "secretKeyRef", "url") if voice["audio"].get(k)]
        if len(sources) != 1:
            errs.append(
                SpecError(
                    f"spec.tts.voices[{i}].audio", "needs exactly one of configMapKeyRef, secretKeyRef, url"
                )
            )
    names = [v["name"] for v in spec["tts"].get("voices") or []]
    if len(names) != len(set(names)):
        errs.append(SpecError("spec.tts.voices", "voice names must be unique"))
    gw = spec["gateway"]
    ing = gw.get("ingress") or {}
    if ing.get("enabled") and not ing.get("host"):
        errs.append(SpecError("spec.gateway.ingress.host", "required when the ingress is enabled"))
    auto = gw.get("autoscaling") or {}
    if auto.get("enabled") and auto["minReplicas"] > auto["maxReplicas"]:
        errs.append(SpecError("spec.gateway.autoscaling.minReplicas", "exceeds maxReplicas"))
    cache = spec["modelCache"]
    if cache.get("existingClaim") and not cache["enabled"]:
        errs.append(SpecError("spec.modelCache.existingClaim", "set while modelCache.enabled is false"))
    return errs


def checked(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Defaulted and validated spec, or InvalidSpec."""
    out = with_defaults(spec)
    errs = validate(out)
    if errs:
        raise InvalidSpec(errs)
    return out
