"""Does the real vLLM-Omni accept what the operator renders for `gpu` mode? Runs INSIDE the vLLM-Omni venv
(tests/vllm_omni_env.py PYTHON), never in the project's own environment, and never starts an engine: it only
parses and loads, with vLLM-Omni's own code.

    python vllm_omni_accepts.py CASES.json

CASES.json is a list of {"name", "argv", "deploy_config", "model_type"}: `argv` is the model server
container's command + args (`vllm serve <model> --omni ...`), `deploy_config` a local copy of the rendered
`--deploy-config` file (the container path is a ConfigMap mount), `model_type` the pipeline the model must
resolve to (`qwen3_omni_moe`, `qwen3_tts`). One process checks every case: importing vLLM takes most of the
time. Prints {"vllm_omni", "vllm", "cases": [report, ...]} on stdout (everything vLLM logs goes to stderr);
exit 0 when every case is accepted, 1 when one is refused, 2 for a usage error.

Per case, following `vllm serve --omni` in vLLM-Omni 0.30.0 (entrypoints/cli/main.py, cli/serve.py,
openai/api_server.py, entrypoints/omni_base.py, engine/omni_engine_base.py):
1. the CLI: the real serve parser (vLLM's make_arg_parser + the OmniConfig group) parses argv[1:]; an
   unknown flag or a bad value fails as it would on the node. Then OmniServeCommand.validate. argparse would
   also take a unique prefix of a flag (`--deploy-conf`), which a later release can make ambiguous: every
   flag must be spelled out.
2. the deploy YAML: load_deploy_config (the loader vllm serve uses) and load_omni_transfer_config (the
   connector loader). load_deploy_config ignores unknown top-level keys and files unknown stage keys under
   engine_extras without a word, so the keys are also compared with the fields its own classes declare:
   DeployConfig (top level), StageDeployConfig + OmniEngineArgs (stages), vLLM's SamplingParams
   (default_sampling_params: built with SamplingParams(**...), exactly as stage start-up does), the keys the
   installed Qwen3-TTS talker reads (subtalker_sampling_params) and, for connector `extra` keys, which no
   class declares, the installed vllm_omni sources must read the key somewhere (its consumers read them with
   `cfg.get("...")`): a typo check, not a proof that the key does something.
3. resolution: the parsed CLI values go through the same steps as AsyncOmni's start-up
   (prepare_stage_config_inputs, load_and_resolve_stage_configs) into the typed per-stage configs, whose
   pydantic classes check every value's type and range and refuse a stage key no config owns. The model
   name is replaced by a directory holding only a config.json with the model's type (STUB_CONFIGS): the
   resolver reads nothing else from the checkpoint, and the real one would be fetched from the hub.
The report lists the resolved per-stage values, so a test can check that a CLI flag did not silently
override a per-stage value of the deploy file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

# Before vLLM is imported: no hub (the sandbox and CI have no network) and no usage reports.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["VLLM_NO_USAGE_STATS"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

# The model's config.json as far as pipeline resolution reads it (StageConfigFactory.get_pipeline_config:
# model_type, architectures, and Qwen3-Omni's enable_audio_output, which picks the full 3-stage pipeline).
STUB_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3_omni_moe": {
        "model_type": "qwen3_omni_moe",
        "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
        "enable_audio_output": True,
    },
    "qwen3_tts": {"model_type": "qwen3_tts", "architectures": ["Qwen3TTSForConditionalGeneration"]},
}

# Resolved per-stage values reported: (report key, stage config attribute, field).
REPORTED = (
    ("devices", "runtime_config", "devices"),
    ("num_gpus", "runtime_config", "num_gpus"),
    ("gpu_memory_utilization", "cache_config", "gpu_memory_utilization"),
    ("enable_prefix_caching", "cache_config", "enable_prefix_caching"),
    ("max_num_seqs", "scheduler_config", "max_num_seqs"),
    ("max_num_batched_tokens", "scheduler_config", "max_num_batched_tokens"),
    ("max_model_len", "scheduler_config", "max_model_len"),
    ("async_scheduling", "scheduler_config", "async_scheduling"),
    ("enable_chunked_prefill", "scheduler_config", "enable_chunked_prefill"),
    ("enforce_eager", "model_config", "enforce_eager"),
    ("trust_remote_code", "model_config", "trust_remote_code"),
    ("dtype", "model_config", "dtype"),
    ("default_sampling_params", "model_config", "default_sampling_params"),
    ("subtalker_sampling_params", "model_config", "subtalker_sampling_params"),
    ("tensor_parallel_size", "parallel_config", "tensor_parallel_size"),
)

# Consumed by OmniBase.__init__ / OmniEngineBase.__init__ before the stage configs are resolved.
_ENGINE_CONSUMED = (
    "stage_init_timeout",
    "init_timeout",
    "log_stats",
    "enable_ar_profiler",
    "output_modalities",
    "tts_batch_max_items",
    "tokenizer",
    "client_config",
    "enable_orch_monitor",
    "single_stage_mode",
)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


class Sources:
    """The installed vllm_omni sources, read once: the consumers of keys that no class declares."""

    def __init__(self) -> None:
        import vllm_omni

        root = Path(vllm_omni.__file__).parent
        self.text = "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*.py")))
        self.subtalker_keys = frozenset(re.findall(r"subtalker_params\.get\(\s*[\"'](\w+)[\"']", self.text))

    def reads(self, key: str) -> bool:
        """Whether some code can read `key`: a string literal ("key"), a field (`key: int`), a keyword
        argument (key=) or an attribute (.key). A typo check: it does not prove the key is used."""
        k = re.escape(key)
        return re.search(rf"[\"']{k}[\"']|^\s*{k}\s*:|\b{k}=|\.{k}\b", self.text, re.MULTILINE) is not None


def _serve_parser() -> tuple[Any, Any, Any]:
    """(top-level parser, serve subparser, serve command), built as vllm_omni.entrypoints.cli.main does."""
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm_omni.entrypoints.cli import serve
    from vllm_omni.utils.tracking_parser import TrackingArgumentParser

    cli_env_setup()
    serve._ensure_vllm_platform()
    parser = TrackingArgumentParser(prog="vllm", description="vLLM OMNI CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    (cmd,) = [c for c in serve.cmd_init() if c.name == "serve"]
    sub = cmd.subparser_init(subparsers)
    sub.set_defaults(dispatch_function=cmd.cmd)
    return parser, sub, cmd


def check_cli(argv: list[str], errors: list[str]) -> Any:
    """The parsed TrackingNamespace, or None when the real parser refuses argv."""
    if argv[:2] != ["vllm", "serve"]:
        errors.append(f"cli: the command must start with `vllm serve`, got {argv[:2]}")
        return None
    if "--omni" not in argv:
        # The `vllm` entry point hands the command to vLLM-Omni only when --omni is present.
        errors.append("cli: --omni is missing: plain vLLM would serve the model, without its stages")
        return None
    parser, sub, cmd = _serve_parser()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            ns = parser.parse_args(argv[1:])
    except SystemExit:
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        errors.append(f"cli: {lines[-1] if lines else 'the parser refused the arguments'}")
        return None
    spelled = set(sub._option_string_actions)
    for token in argv[2:]:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            if flag not in spelled and flag.replace("_", "-") not in spelled:
                errors.append(
                    f"cli: {flag} is not a flag of `vllm serve`: argparse took it as an abbreviation"
                )
    try:
        cmd.validate(ns)
    except Exception as e:  # validate raises ValueError and whatever vLLM's own checks raise
        errors.append(f"cli: {type(e).__name__}: {e}")
        return None
    if ns.model_tag is not None:  # OmniServeCommand.cmd
        ns.model = ns.model_tag
    return ns


def _unknown(keys: Iterable[str], known: frozenset[str]) -> list[str]:
    return sorted(k for k in keys if k not in known)


def check_deploy_keys(raw: dict[str, Any], sources: Sources, errors: list[str]) -> None:
    from vllm.sampling_params import SamplingParams
    from vllm_omni.config.stage_config import DeployConfig, StageDeployConfig
    from vllm_omni.distributed.omni_connectors.factory import OmniConnectorFactory
    from vllm_omni.engine.arg_utils import OmniEngineArgs

    for key in _unknown(raw, _field_names(DeployConfig) | {"base_config"}):
        errors.append(f"deploy: unknown top-level key {key!r} (DeployConfig declares no such field)")
    stage_fields = _field_names(StageDeployConfig) | _field_names(OmniEngineArgs)
    for i, stage in enumerate(raw.get("stages") or []):
        where = f"deploy: stages[{i}] (stage_id {stage.get('stage_id')})"
        for key in _unknown(stage, stage_fields | {"engine_args", "runtime"}):
            errors.append(f"{where}: unknown key {key!r} (neither StageDeployConfig nor OmniEngineArgs)")
        for key in _unknown(stage.get("engine_args") or {}, stage_fields):
            errors.append(f"{where}: unknown engine_args key {key!r}")
        for key in _unknown(stage.get("runtime") or {}, frozenset({"devices", "num_replicas", "env"})):
            errors.append(f"{where}: unknown runtime key {key!r}")
        sampling = stage.get("default_sampling_params")
        if sampling is not None:
            try:
                SamplingParams(**sampling)
            except Exception as e:  # TypeError (unknown key) or ValueError (bad value), as at stage start
                errors.append(f"{where}: default_sampling_params: {type(e).__name__}: {e}")
        for key in _unknown(stage.get("subtalker_sampling_params") or {}, sources.subtalker_keys):
            errors.append(
                f"{where}: subtalker_sampling_params key {key!r} is not read by the installed talker "
                f"(it reads {sorted(sources.subtalker_keys)})"
            )
    registered = set(OmniConnectorFactory.list_registered_connectors())
    for name, conn in (raw.get("connectors") or {}).items():
        if conn.get("name") not in registered:
            errors.append(f"deploy: connector {name!r}: unknown connector {conn.get('name')!r}")
        for key in _unknown(conn, frozenset({"name", "extra"})):
            errors.append(f"deploy: connector {name!r}: unknown key {key!r}")
        for key in sorted(conn.get("extra") or {}):
            if not sources.reads(key):
                errors.append(f"deploy: connector {name!r}: extra key {key!r} is read nowhere in vllm_omni")


def _engine_kwargs(ns: Any, deploy_config: str) -> tuple[dict[str, Any], bool | None]:
    """The keyword arguments AsyncOmni's engine resolves its stages from, and its trust_remote_code:
    build_async_omni_from_stage_config -> OmniBase.__init__ -> OmniEngineBase.__init__."""
    from vllm_omni.config.config_factory import with_trust_remote_code_override

    kwargs = ns.get_explicit_kwargs_dict()
    kwargs.pop("robot_openpi_idle_timeout", None)
    kwargs.pop("model", None)
    for name in _ENGINE_CONSUMED:
        kwargs.pop(name, None)
    trust_remote_code = kwargs.pop("trust_remote_code", None)
    kwargs = with_trust_remote_code_override(kwargs, trust_remote_code)
    kwargs["deploy_config"] = deploy_config  # the local copy of the file mounted at the argv path
    return kwargs, trust_remote_code


def resolve(ns: Any, deploy_config: str, model_dir: str, report: dict[str, Any], errors: list[str]) -> None:
    from vllm.sampling_params import SamplingParams
    from vllm_omni.config.stage_config import load_deploy_config
    from vllm_omni.engine.omni_engine_base import load_and_resolve_stage_configs
    from vllm_omni.entrypoints.utils import prepare_stage_config_inputs

    deploy = load_deploy_config(deploy_config)
    report["async_chunk"] = deploy.async_chunk
    report["model_runner"] = deploy.model_runner
    kwargs, trust_remote_code = _engine_kwargs(ns, deploy_config)
    inputs = prepare_stage_config_inputs(model_dir, kwargs, trust_remote_code=trust_remote_code)
    resolution = load_and_resolve_stage_configs(
        inputs.model,
        inputs.kwargs,
        trust_remote_code=inputs.trust_remote_code,
        deploy_config_path=inputs.deploy_config_path,
        stage_overrides=inputs.stage_overrides,
        strategy_config_path=inputs.strategy_config_path,
    )
    pipeline = resolution.pipeline_config
    report["pipeline"] = pipeline.model_type if pipeline is not None else None
    stages = []
    for stage in resolution.stage_configs:
        entry: dict[str, Any] = {"stage_id": stage.stage_id, "model_stage": stage.model_stage}
        execution = getattr(stage.stage_pipeline_config, "execution_type", None)
        entry["execution_type"] = getattr(execution, "value", execution)
        for key, part, name in REPORTED:
            entry[key] = _jsonable(getattr(getattr(stage, part, None), name, None))
        stages.append(entry)
        if entry["execution_type"] != "diffusion":
            try:  # what stage start-up builds (engine/stage_init_utils.py extract_legacy_stage_metadata)
                SamplingParams(**(stage.model_config.default_sampling_params or {}))
            except Exception as e:
                errors.append(f"resolve: stage {stage.stage_id} default_sampling_params: {e}")
    report["stages"] = stages


def check_case(case: dict[str, Any], sources: Sources, stub_root: Path) -> dict[str, Any]:
    import yaml

    errors: list[str] = []
    report: dict[str, Any] = {"name": case["name"], "errors": errors}
    stub_config = STUB_CONFIGS.get(case["model_type"])
    if stub_config is None:
        errors.append(f"case: unknown model_type {case['model_type']!r}; known: {sorted(STUB_CONFIGS)}")
        report["ok"] = False
        return report
    model_dir = stub_root / case["model_type"]
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(stub_config))

    ns = check_cli(list(case["argv"]), errors)
    if ns is not None:
        report["cli"] = _jsonable(ns.get_explicit_kwargs_dict())
    deploy_config = case["deploy_config"]
    try:
        raw = yaml.safe_load(Path(deploy_config).read_text())
        if not isinstance(raw, dict):
            raise ValueError("the file is not a YAML mapping")
        check_deploy_keys(raw, sources, errors)
    except Exception as e:
        errors.append(f"deploy: {type(e).__name__}: {e}")
    try:
        from vllm_omni.distributed.omni_connectors.utils.initialization import load_omni_transfer_config

        transfer = load_omni_transfer_config(config_path=deploy_config)
        report["connector_edges"] = sorted(f"{a}->{b}" for a, b in (transfer.connectors if transfer else {}))
    except Exception as e:
        errors.append(f"connectors: {type(e).__name__}: {e}")
    if ns is not None:
        try:
            resolve(ns, deploy_config, str(model_dir), report, errors)
        except Exception as e:  # the resolver raises ValueError, TypeError, pydantic's ValidationError ...
            errors.append(f"resolve: {type(e).__name__}: {e}")
        if report.get("pipeline") not in (None, case["model_type"]):
            errors.append(f"resolve: the pipeline is {report['pipeline']!r}, not {case['model_type']!r}")
    report["ok"] = not errors
    return report


def main(argv: list[str]) -> int:
    # vLLM logs to stdout: keep stdout for the report alone.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    cases = json.loads(Path(argv[0]).read_text())
    import vllm
    import vllm_omni

    sources = Sources()
    with tempfile.TemporaryDirectory(prefix="vllm-omni-accepts-") as tmp:
        reports = [check_case(case, sources, Path(tmp)) for case in cases]
    json.dump({"vllm_omni": vllm_omni.__version__, "vllm": vllm.__version__, "cases": reports}, out, indent=1)
    out.write("\n")
    out.flush()
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
