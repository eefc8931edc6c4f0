"""Dockerfiles and skaffold.yaml, parsed and checked against the package, the operator and the chart.

No Docker engine or skaffold binary exists here: these tests check every fact a build would depend on.
"""

from __future__ import annotations

import copy
import importlib.metadata as md
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.chart_tools import CHART, REPO, one, template
from tests.images.dockerfile import Dockerfile, parse

IMAGES = {
    "gateway": REPO / "images" / "gateway" / "Dockerfile",
    "operator": REPO / "images" / "operator" / "Dockerfile",
    "vllm-omni": REPO / "images" / "vllm-omni" / "Dockerfile",
}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = PYPROJECT["project"]["scripts"]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
VALUE_KEY = {"gateway": "gateway", "operator": "operator", "vllm-omni": "vllmOmni"}


@pytest.fixture(scope="module", params=list(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, Dockerfile]:
    return request.param, parse(IMAGES[request.param])


def _entry(df: Dockerfile) -> list[str]:
    ep = df.final.last("ENTRYPOINT")
    assert ep is not None, "no ENTRYPOINT in the final stage"
    words = ep.exec_form()
    return words[2:] if words[:2] == ["tini", "--"] else words


def test_multi_stage_with_pinned_bases(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    assert len(df.stages) >= 2, f"{name}: not multi-stage"
    assert any("--from=" in c.args for c in df.final.all("COPY")), f"{name}: final stage copies nothing built"
    for stage in df.stages:
        assert "$" not in stage.base, f"{name}: unresolved base {stage.base}"
        repo, _, tag = stage.base.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: base {stage.base} is not pinned"
        assert re.match(r"^v?\d+\.\d+\.\d+", tag), f"{name}: base tag {tag} is not an exact version"
    # build tools stay out of the runtime stage
    runtime_text = " ".join(i.args for i in df.final.instructions)
    assert "build-essential" not in runtime_text and "cmake" not in runtime_text


def test_runs_as_non_root(image: tuple[str, Dockerfile]) -> None:
    name, df = image
    user = df.final.last("USER")
    assert user is not None, f"{name}: no USER in the final stage"
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"{name}: USER {user.args} (numeric non-root uid expected)"
    # the chart and the operator run these images with runAsNonRoot: a numeric uid lets the kubelet check it
    assert VALUES["operator"]["podSecurityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_entrypoint_is_a_console_script_and_cmd_parses(name: str) -> None:
    df = parse(IMAGES[name])
    entry = _entry(df)
    script = {"gateway": "voice-gateway", "operator": "voice-gateway-operator"}[name]
    assert entry == [script], entry
    assert script in SCRIPTS, f"{script} is not a console script in pyproject.toml"
    cmd = df.final.last("CMD")
    assert cmd is not None
    if name == "gateway":
        from gateway.cli import build_parser
    else:
        from voice_operator.cli import build_parser
    args = build_parser().parse_args(cmd.exec_form())
    if name == "gateway":
        assert (args.host, args.port) == ("0.0.0.0", 8004)
    # the build stage smoke-runs the installed script
    assert any(f"{script} --help" in r.args for r in df.stages[0].all("RUN"))


def test_copy_sources_exist() -> None:
    for name, path in IMAGES.items():
        df = parse(path)
        for stage in df.stages:
            for c in stage.all("COPY"):
                if "--from=" in c.args:
                    continue
                srcs = [w for w in c.args.split() if not w.startswith("--")][:-1]
                for src in srcs:
                    assert (REPO / src).exists(), f"{name}: COPY {src} does not exist in the repository"


def test_exposed_ports_match_the_chart_and_operator() -> None:
    from voice_operator import defaults

    def exposed(name: str) -> set[int]:
        return {int(p) for e in parse(IMAGES[name]).final.all("EXPOSE") for p in e.args.split()}

    assert {defaults.GATEWAY_PORT, 8091} <= exposed("gateway")
    assert set(VALUES["operator"]["ports"].values()) <= exposed("operator")
    assert {defaults.OMNI_PORT, defaults.TTS_PORT} <= exposed("vllm-omni")


def _requirement_names(df: Dockerfile) -> set[str]:
    names: set[str] = set()
    for stage in df.stages:
        for run in stage.all("RUN"):
            for m in re.finditer(r'pip install ((?:"[^"]+"\s*)+)', run.args):
                for req in re.findall(r'"([^"]+)"', m.group(1)):
                    names.add(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower())
    return names


def _closure(dists: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(dists)
    while todo:
        d = todo.pop().lower().replace("_", "-")
        if d in seen:
            continue
        seen.add(d)
        try:
            reqs = md.requires(d) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(re.split(r"[<>=!~\[; (]", r, maxsplit=1)[0])
    return seen


def test_operator_image_installs_every_third_party_import_of_the_operator() -> None:
    """The operator image installs the package with --no-deps: its explicit list must cover every
    third-party module voice_operator imports (directly or through those packages' own dependencies)."""
    import ast

    imported: set[str] = set()
    for py in (REPO / "operator" / "voice_operator").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "voice_operator"}
    assert "kopf" in third_party or "yaml" in third_party
    installed = _closure(_requirement_names(parse(IMAGES["operator"])))
    providers = md.packages_distributions()
    for module in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists & installed, f"voice_operator imports {module} ({dists}) but the operator image lacks it"


def test_vllm_omni_image_pins_a_matching_release_pair() -> None:
    df = parse(IMAGES["vllm-omni"])
    vllm, omni = df.global_args["VLLM_VERSION"], df.global_args["VLLM_OMNI_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", vllm) and re.fullmatch(r"\d+\.\d+\.\d+", omni)
    assert vllm.split(".")[:2] == omni.split(".")[:2], "vllm and vllm-omni minor versions differ"
    assert _requirement_names(df) >= {"vllm", "vllm-omni"}
    # the operator runs `vllm serve <model> --omni ... --log-stats` in this image: `vllm` is vllm's script
    from voice_operator.render import render

    vg = one(template("-f", str(CHART / "values-gpu.yaml")), "VoiceGateway")
    servers = [
        c
        for c in render(vg)
        if c["kind"] == "Deployment"
        and c["metadata"]["labels"]["app.kubernetes.io/component"] in ("omni", "tts")
    ]
    assert len(servers) == 2
    for dep in servers:
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["vllm"] and "--omni" in container["args"]
        assert container["image"].startswith(VALUES["images"]["vllmOmni"]["repository"] + ":")
        assert dep["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") in (True, None)


def test_image_names_and_versions_are_consistent() -> None:
    from voice_operator import __version__, defaults

    version = PYPROJECT["project"]["version"]
    assert CHART_META["appVersion"] == version == __version__
    chart_repos = {k: VALUES["images"][v]["repository"] for k, v in VALUE_KEY.items()}
    operator_defaults = {
        "gateway": defaults.GATEWAY_IMAGE,
        "operator": defaults.OPERATOR_IMAGE,
        "vllm-omni": defaults.VLLM_OMNI_IMAGE,
    }
    for name, ref in operator_defaults.items():
        assert ref == f"{chart_repos[name]}:{version}", (name, ref)
    artifacts = {a["image"]: a for a in SKAFFOLD["build"]["artifacts"]}
    assert set(artifacts) == set(chart_repos.values())
    for name, repo in chart_repos.items():
        assert artifacts[repo]["docker"]["dockerfile"] == f"images/{name}/Dockerfile"
        assert artifacts[repo].get("context", ".") == "."
        assert (REPO / artifacts[repo]["docker"]["dockerfile"]).is_file()


# ---- skaffold.yaml ---------------------------------------------------------------------------------------
# Keys of the skaffold/v4beta13 schema objects this file uses (from its published JSON schema).
ALLOWED = {
    "": {
        "apiVersion",
        "kind",
        "metadata",
        "requires",
        "build",
        "test",
        "render",
        "manifests",
        "deploy",
        "portForward",
        "resourceSelector",
        "verify",
        "customActions",
        "profiles",
    },
    "build": {
        "artifacts",
        "insecureRegistries",
        "tagPolicy",
        "platforms",
        "local",
        "googleCloudBuild",
        "cluster",
    },
    "build.local": {"push", "tryImportMissing", "useDockerCLI", "useBuildkit", "concurrency"},
    "artifact": {"image", "context", "sync", "requires", "hooks", "platforms", "runtimeType", "docker"},
    "docker": {
        "dockerfile",
        "target",
        "buildArgs",
        "network",
        "addHost",
        "cacheFrom",
        "cliFlags",
        "pullParent",
        "noCache",
        "cacheTo",
        "squash",
        "secrets",
        "ssh",
    },
    "deploy": {
        "docker",
        "helm",
        "kubectl",
        "kubeContext",
        "logs",
        "statusCheck",
        "statusCheckDeadlineSeconds",
        "tolerateFailuresUntilDeadline",
        "transformableAllowList",
        "cloudrun",
        "kpt",
    },
    "helm": {"flags", "releases"},
    "release": {
        "name",
        "chartPath",
        "remoteChart",
        "valuesFiles",
        "namespace",
        "version",
        "setValues",
        "setValueTemplates",
        "setFiles",
        "createNamespace",
        "wait",
        "recreatePods",
        "skipBuildDependencies",
        "skipTests",
        "useHelmSecrets",
        "repo",
        "upgradeOnChange",
        "overrides",
        "packaged",
        "dependsOn",
    },
    "portForward": {"resourceType", "resourceName", "namespace", "port", "address", "localPort"},
    "profile": {
        "name",
        "activation",
        "requiresAllActivations",
        "patches",
        "build",
        "test",
        "render",
        "manifests",
        "deploy",
        "portForward",
        "resourceSelector",
        "verify",
        "customActions",
    },
    "patch": {"op", "path", "from", "value"},
}


def _keys(obj: dict[str, Any], kind: str) -> None:
    extra = set(obj) - ALLOWED[kind]
    assert not extra, f"skaffold.yaml: unknown keys {extra} in {kind or 'the top level'}"


def _pointer(doc: Any, path: str) -> tuple[Any, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node = doc
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last: str | int = int(parts[-1]) if isinstance(node, list) else parts[-1]
    return node, last


def apply_profile(config: dict[str, Any], profile: str) -> dict[str, Any]:
    """Skaffold's profile activation for the parts used here: JSON patches (add/remove/replace)."""
    out = copy.deepcopy(config)
    (prof,) = [p for p in config["profiles"] if p["name"] == profile]
    for patch in prof.get("patches", []):
        node, key = _pointer(out, patch["path"])
        op = patch.get("op", "replace")
        if op == "remove":
            del node[key]
        elif op == "replace":
            node[key]  # must exist
            node[key] = patch["value"]
        elif op == "add":
            if isinstance(node, list):
                node.insert(len(node) if key == "-" else int(key), patch["value"])
            else:
                node[key] = patch["value"]
        else:
            pytest.fail(f"unsupported patch op {op}")
    out.pop("profiles")
    return out


def _template_key(image: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_skaffold_structure() -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", SKAFFOLD["apiVersion"])
    assert int(SKAFFOLD["apiVersion"].rsplit("beta", 1)[1]) >= 11, "use a current v4beta schema"
    assert SKAFFOLD["kind"] == "Config"
    _keys(SKAFFOLD, "")
    _keys(SKAFFOLD["build"], "build")
    _keys(SKAFFOLD["build"]["local"], "build.local")
    for a in SKAFFOLD["build"]["artifacts"]:
        _keys(a, "artifact")
        _keys(a["docker"], "docker")
    _keys(SKAFFOLD["deploy"], "deploy")
    _keys(SKAFFOLD["deploy"]["helm"], "helm")
    for r in SKAFFOLD["deploy"]["helm"]["releases"]:
        _keys(r, "release")
    for pf in SKAFFOLD.get("portForward", []):
        _keys(pf, "portForward")
    assert {p["name"] for p in SKAFFOLD["profiles"]} >= {"gpu", "cpu"}
    for p in SKAFFOLD["profiles"]:
        _keys(p, "profile")
        for patch in p.get("patches", []):
            _keys(patch, "patch")


@pytest.mark.parametrize("profile", [None, "gpu", "cpu"])
def test_skaffold_deploys_the_chart_with_the_built_images(profile: str | None) -> None:
    config = SKAFFOLD if profile is None else apply_profile(SKAFFOLD, profile)
    built = [a["image"] for a in config["build"]["artifacts"]]
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    for vf in release["valuesFiles"]:
        assert (REPO / vf).is_file(), vf
    if profile:
        assert release["valuesFiles"] == [f"charts/voice-gateway/values-{profile}.yaml"]
    # every template refers to an image this profile builds; every built image reaches the chart
    fake = {}
    for image in built:
        key = _template_key(image)
        fake[f"IMAGE_REPO_{key}"] = f"localhost:5000/{image.rsplit('/', 1)[1]}"
        fake[f"IMAGE_TAG_{key}"] = "abc1234"
    sets = []
    for path, tmpl in release["setValueTemplates"].items():
        names = re.findall(r"\{\{\s*\.([A-Za-z0-9_]+)\s*\}\}", tmpl)
        assert names, tmpl
        for n in names:
            assert n in fake, f"{path}: {n} refers to an image this profile does not build"
        value = re.sub(r"\{\{\s*\.([A-Za-z0-9_]+)\s*\}\}", lambda m: fake[m.group(1)], tmpl)
        sets += ["--set", f"{path}={value}"]
    objs = template(*[a for vf in release["valuesFiles"] for a in ("-f", str(REPO / vf))], *sets,
                    release=release["name"], namespace=release["namespace"])  # fmt: skip
    op_image = one(objs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert op_image == "localhost:5000/voice-gateway-operator:abc1234"
    vg = one(objs, "VoiceGateway")
    assert vg["spec"]["gateway"]["image"] == "localhost:5000/voice-gateway:abc1234"
    if vg["spec"]["mode"] == "gpu":
        assert vg["spec"]["omni"]["image"] == "localhost:5000/vllm-omni:abc1234"
    else:
        assert "ghcr.io/aetherpro/vllm-omni" not in built
        assert vg["spec"]["omni"]["image"] == "localhost:5000/voice-gateway:abc1234"
    # port-forward targets the gateway Service the operator creates for this release's resource
    from voice_operator.render import render

    services = {c["metadata"]["name"]: c for c in render(vg) if c["kind"] == "Service"}
    for pf in config.get("portForward", []):
        assert pf["namespace"] == release["namespace"]
        assert pf["resourceName"] in services
        assert pf["port"] in {p["port"] for p in services[pf["resourceName"]]["spec"]["ports"]}


def test_readme_snippets_use_real_paths() -> None:
    text = (CHART / "README.md").read_text()
    for path in re.findall(r"charts/voice-gateway/[\w./-]+\.yaml", text):
        assert (REPO / path).is_file(), path
    assert Path(REPO / "scripts" / "get-helm.sh").is_file()


# Debian bookworm's base-passwd (group.master, passwd.master) plus apt's _apt: every Debian-based image, the
# python:*-bookworm ones included, already has these names, and `groupadd`/`useradd` of one stops the build
# ("group 'voice' already exists").
_BASE_PASSWD_GROUPS = """root daemon bin sys adm tty disk lp mail news uucp man proxy kmem dialout fax voice
cdrom floppy tape sudo audio dip www-data backup operator list irc src gnats shadow utmp video sasl plugdev
staff games users nogroup"""
_BASE_PASSWD_USERS = (
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats _apt nobody"
)
DEBIAN_GROUPS = frozenset(_BASE_PASSWD_GROUPS.split())
DEBIAN_USERS = frozenset(_BASE_PASSWD_USERS.split())


def _account_commands(df: Dockerfile) -> list[list[str]]:
    """Each `groupadd ...` / `useradd ...` of the final stage's RUNs, as words."""
    found = []
    for run in df.final.all("RUN"):
        for part in re.split(r"&&|;|\|\|", run.args):
            words = shlex.split(part)
            if words and words[0] in ("groupadd", "useradd"):
                found.append(words)
    return found


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_accounts_are_new_on_a_debian_base(name: str) -> None:
    df = parse(IMAGES[name])
    commands = _account_commands(df)
    assert {c[0] for c in commands} == {"groupadd", "useradd"}, commands
    for words in commands:
        account = words[-1]
        taken = DEBIAN_GROUPS if words[0] == "groupadd" else DEBIAN_USERS | DEBIAN_GROUPS
        assert account not in taken, f"{name}: {words[0]} {account}: Debian's base-passwd already has it"
        ids = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--gid", "--uid", "-g", "-u")]
        assert ids and all(i == "10001" for i in ids if i.isdigit()), words


def test_no_syntax_directive_and_a_dockerignore() -> None:
    # `# syntax=` makes BuildKit pull a frontend image from a registry before building
    for name, path in IMAGES.items():
        assert not path.read_text().lstrip().startswith("# syntax="), f"{name}: # syntax= directive"
    ignore = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "**/__pycache__"):
        assert entry in ignore, f".dockerignore lacks {entry}"
