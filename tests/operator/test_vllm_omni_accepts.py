"""The operator's `gpu` mode output is accepted by the real vLLM-Omni 0.30.0: the `vllm serve` command line of
every model server and its `--deploy-config` are parsed and loaded by vLLM-Omni's own argument parser, deploy
config loader, connector loader and stage-config resolver (tests/operator/vllm_omni_accepts.py, run in the
cached vLLM-Omni venv). A typo'd flag or stage key fails here, not on a GPU node at 3 a.m. The negative cases
prove that each kind of mistake is caught."""

from __future__ import annotations

import copy
import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from voice_operator import API_VERSION, KIND
from voice_operator.render import render
from voice_operator.spec import with_defaults

from tests import vllm_omni_env

Obj = dict[str, Any]
HERE = Path(__file__).resolve().parent
CHECKER = HERE / "vllm_omni_accepts.py"
EXAMPLES = sorted((HERE.parents[1] / "examples").glob("*.yaml"))
MODEL_TYPES = {"omni": "qwen3_omni_moe", "tts": "qwen3_tts"}
DEPLOY_CONFIG_PATH = "/etc/vllm-omni/deploy.yaml"
# Per-stage values of the deploy file the resolved stage must keep (no CLI flag may override them).
STAGE_KEYS = (
    "devices",
    "gpu_memory_utilization",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "enforce_eager",
    "async_scheduling",
    "enable_prefix_caching",
    "trust_remote_code",
)

VARIANTS: dict[str, Obj] = {
    "defaults": {},
    "two-gpus": {
        "omni": {"gpu": {"count": 2, "memoryUtilization": 0.9}},
        "tts": {"gpu": {"count": 2, "memoryUtilization": 0.5}},
    },
    "memory-shares": {
        "omni": {"gpu": {"memoryUtilization": 0.8}, "stageMemoryShares": [0.6, 0.3, 0.1]},
        "tts": {"gpu": {"memoryUtilization": 0.3}, "stageMemoryShares": [0.7, 0.3]},
    },
    "max-model-len": {"omni": {"maxModelLen": 8192}, "tts": {"maxModelLen": 2048}},
    "tts-own-gpu-extra-args": {
        "omni": {"extraArgs": ["--stage-init-timeout", "1200"]},
        "tts": {
            "gpu": {"count": 1, "resourceName": "nvidia.com/gpu", "memoryUtilization": 0.9},
            "port": 9001,
            "extraArgs": ["--init-timeout", "1800"],
        },
    },
}


def vg(spec: Obj, name: str = "demo", ns: str = "team") -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": ns, "uid": "0f0e0d0c-0000-4000-8000-000000000001"},
        "spec": spec,
    }


def server_output(resource: Obj, component: str) -> tuple[list[str], Obj]:
    """(container command + args, deploy config) of one model server, as the operator renders them."""
    name = resource["metadata"]["name"]
    objs = render(resource)
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{name}-{component}"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    (cm,) = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{name}-{component}-deploy"
    ]
    return container["command"] + container["args"], yaml.safe_load(cm["data"]["deploy.yaml"])


def _gpu_resources() -> dict[str, Obj]:
    out = {f"variant-{k}": vg(v) for k, v in VARIANTS.items()}
    for path in EXAMPLES:
        resource = yaml.safe_load(path.read_text())
        if with_defaults(resource.get("spec"))["mode"] == "gpu":
            out[f"example-{path.stem}"] = resource
    return out


RESOURCES = _gpu_resources()
ACCEPTED = {f"{r}/{c}": (resource, c) for r, resource in RESOURCES.items() for c in MODEL_TYPES}


def _replace(argv: list[str], old: str, new: str) -> list[str]:
    assert old in argv
    return [new if a == old else a for a in argv]


def _mutated(component: str, mutate: Any) -> tuple[list[str], Obj, str]:
    argv, deploy = server_output(vg({}), component)
    argv, deploy = copy.deepcopy(argv), copy.deepcopy(deploy)
    return (*mutate(argv, deploy), MODEL_TYPES[component])


def _walk(deploy: Obj, path: tuple[Any, ...]) -> Obj:
    """The mapping holding path[-1]; an int in the path picks a stage by its stage_id."""
    node: Any = deploy
    for p in path[:-1]:
        node = next(s for s in node if s["stage_id"] == p) if isinstance(p, int) else node[p]
    return node


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(argv: list[str], deploy: Obj) -> tuple[list[str], Obj]:
        _walk(deploy, path)[path[-1]] = value
        return argv, deploy

    return mutate


def _rename(path: tuple[Any, ...], new: str) -> Any:
    def mutate(argv: list[str], deploy: Obj) -> tuple[list[str], Obj]:
        node = _walk(deploy, path)
        node[new] = node.pop(path[-1])
        return argv, deploy

    return mutate


# name -> (component, mutation of the default rendering, what the refusal must say)
REFUSED: dict[str, tuple[str, Any, str]] = {
    "typo-flag": (
        "tts",
        lambda a, d: (_replace(a, "--deploy-config", "--deploy-confg"), d),
        "unrecognized arguments: --deploy-confg",
    ),
    "abbreviated-flag": (
        "omni",
        lambda a, d: (_replace(a, "--deploy-config", "--deploy-conf"), d),
        "--deploy-conf is not a flag of `vllm serve`",
    ),
    "cli-value-wrong-type": (
        "tts",
        lambda a, d: (_replace(a, a[a.index("--port") + 1], "eighty"), d),
        "argument --port: invalid int value: 'eighty'",
    ),
    "no-omni-flag": ("omni", lambda a, d: ([x for x in a if x != "--omni"], d), "--omni is missing"),
    "typo-stage-key": (
        "omni",
        _rename(("stages", 0, "max_num_seqs"), "max_num_seq"),
        "no structured config owner: max_num_seq",
    ),
    "stage-value-wrong-type": (
        "tts",
        _set(("stages", 1, "gpu_memory_utilization"), "half"),
        "gpu_memory_utilization",
    ),
    "stage-value-out-of-range": (
        "omni",
        _set(("stages", 0, "gpu_memory_utilization"), 1.5),
        "less than or equal to 1",
    ),
    "typo-sampling-key": (
        "omni",
        _rename(("stages", 1, "default_sampling_params", "top_k"), "top_kk"),
        "Unexpected keyword argument 'top_kk'",
    ),
    "sampling-value-wrong-type": (
        "tts",
        _set(("stages", 0, "default_sampling_params", "max_tokens"), "lots"),
        "stages[0] (stage_id 0): default_sampling_params: TypeError",
    ),
    "typo-subtalker-key": (
        "tts",
        _rename(("stages", 0, "subtalker_sampling_params", "top_p"), "topp"),
        "subtalker_sampling_params key 'topp'",
    ),
    "typo-connector-extra-key": (
        "tts",
        _rename(
            ("connectors", "connector_of_shared_memory", "extra", "codec_chunk_frames"), "codec_chunk_frame"
        ),
        "extra key 'codec_chunk_frame' is read nowhere",
    ),
    "undefined-connector": (
        "omni",
        _set(("stages", 2, "input_connectors", "from_stage_1"), "connector_of_shared_memry"),
        "Undefined connector reference: connector_of_shared_memry",
    ),
    "typo-top-level-key": (
        "tts",
        _rename(("async_chunk",), "async_chunks"),
        "unknown top-level key 'async_chunks'",
    ),
}


def stage_drift(report: Obj, deploy: Obj) -> list[str]:
    """Per-stage values of the deploy file that the resolved stage configs do not keep (a CLI flag that
    applies to every stage overrides them all)."""
    resolved = {s["stage_id"]: s for s in report["stages"]}
    drift = []
    for stage in deploy["stages"]:
        got = resolved[stage["stage_id"]]
        expected = {k: stage[k] for k in (*STAGE_KEYS, "subtalker_sampling_params") if k in stage}
        expected["default_sampling_params"] = {
            **got["default_sampling_params"],
            **stage["default_sampling_params"],
        }
        for key, value in expected.items():
            if got[key] != value:
                drift.append(f"stage {stage['stage_id']} {key}: {got[key]!r}, the deploy file says {value!r}")
    return drift


# A per-stage value overridden from the command line: vLLM-Omni accepts it, the drift check must not.
OVERRIDDEN = {
    "cli-max-model-len": ("tts", lambda a, d: ([*a, "--max-model-len", "2048"], d)),
}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Obj]:
    """Every case checked by ONE run of the checker in the vLLM-Omni venv (importing vLLM is most of the
    cost), keyed by case name."""
    if not vllm_omni_env.PYTHON.exists():
        pytest.fail(
            f"the vLLM-Omni venv is missing ({vllm_omni_env.PYTHON}): build it with "
            "`bash scripts/setup-test-env.sh` (scripts/setup.d/70-vllm-omni.sh)"
        )
    d = tmp_path_factory.mktemp("vllm-omni-accepts")
    cases = []
    for name, (resource, component) in ACCEPTED.items():
        argv, deploy = server_output(resource, component)
        cases.append((name, argv, deploy, MODEL_TYPES[component]))
    for name, (component, mutate, _) in REFUSED.items():
        cases.append((f"refused/{name}", *_mutated(component, mutate)))
    for name, (component, mutate) in OVERRIDDEN.items():
        cases.append((f"overridden/{name}", *_mutated(component, mutate)))
    listing = []
    for i, (name, argv, deploy, model_type) in enumerate(cases):
        path = d / f"deploy-{i}.yaml"
        path.write_text(yaml.safe_dump(deploy, sort_keys=False))
        listing.append({"name": name, "argv": argv, "deploy_config": str(path), "model_type": model_type})
    (d / "cases.json").write_text(json.dumps(listing, indent=1))
    proc = subprocess.run(
        [str(vllm_omni_env.PYTHON), str(CHECKER), str(d / "cases.json")],
        capture_output=True,
        text=True,
        timeout=480,
        cwd=d,
    )
    assert proc.returncode in (0, 1), f"checker crashed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    out = json.loads(proc.stdout)
    by_name = {r["name"]: r for r in out["cases"]}
    assert set(by_name) == {c[0] for c in cases}
    return by_name


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_vllm_omni_accepts_the_rendered_server(name: str, reports: dict[str, Obj]) -> None:
    resource, component = ACCEPTED[name]
    _, deploy = server_output(resource, component)
    report = reports[name]
    assert report["ok"], "vLLM-Omni refuses the operator's output:\n" + "\n".join(report["errors"])
    assert report["pipeline"] == MODEL_TYPES[component]
    spec = with_defaults(resource.get("spec"))
    block = spec[component]
    cli = report["cli"]
    assert cli["omni"] is True and cli["model_tag"] == block["model"]
    assert cli["port"] == block["port"] and cli["deploy_config"] == DEPLOY_CONFIG_PATH
    # Every stage of the pipeline is configured, and keeps the values of the deploy file.
    resolved = {s["stage_id"]: s for s in report["stages"]}
    assert sorted(resolved) == sorted(s["stage_id"] for s in deploy["stages"])
    assert stage_drift(report, deploy) == []
    # The stages on one GPU share exactly the server's memoryUtilization.
    per_device: dict[str, float] = defaultdict(float)
    for got in resolved.values():
        per_device[got["devices"]] += got["gpu_memory_utilization"]
    assert len(per_device) == min(block["gpu"]["count"], 2)
    for total in per_device.values():
        assert total == pytest.approx(block["gpu"]["memoryUtilization"], abs=1e-3)


def test_max_model_len_reaches_the_first_stage_only(reports: dict[str, Obj]) -> None:
    """maxModelLen bounds the thinker / talker; code2wav keeps the length of a whole codec stream."""
    omni = {s["stage_id"]: s for s in reports["variant-max-model-len/omni"]["stages"]}
    tts = {s["stage_id"]: s for s in reports["variant-max-model-len/tts"]["stages"]}
    assert [omni[i]["max_model_len"] for i in (0, 1, 2)] == [8192, None, None]  # None: the model's own
    assert [tts[i]["max_model_len"] for i in (0, 1)] == [2048, 65536]


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_check_refuses_a_mistake(name: str, reports: dict[str, Obj]) -> None:
    report = reports[f"refused/{name}"]
    expected = REFUSED[name][2]
    assert not report["ok"]
    assert any(expected in e for e in report["errors"]), report["errors"]


def test_the_drift_check_catches_a_flag_overriding_every_stage(reports: dict[str, Obj]) -> None:
    """What the operator did before: `--max-model-len` next to --deploy-config. vLLM-Omni accepts it and
    applies it to code2wav too, cutting the codec stream it may hold from 65536 tokens to 2048."""
    report = reports["overridden/cli-max-model-len"]
    assert report["ok"], report["errors"]
    _, deploy = server_output(vg({}), "tts")
    assert stage_drift(report, deploy) == [
        "stage 0 max_model_len: 2048, the deploy file says 4096",
        "stage 1 max_model_len: 2048, the deploy file says 65536",
    ]
