"""`voice-gateway-operator`: run | render [--format kubernetes|compose] -f FILE | crd | rbac."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
DEFAULT_METRICS_PORT = 9090


def _dump_all(docs: list[Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def cmd_crd(_: argparse.Namespace) -> int:
    from voice_operator.crd import build_crd

    sys.stdout.write(yaml.safe_dump(build_crd(), sort_keys=False))
    return 0


def cmd_rbac(args: argparse.Namespace) -> int:
    from voice_operator import rbac

    rules = {
        "cluster": rbac.cluster_rules,
        "namespaced": rbac.namespaced_rules,
        "cluster-scoped": rbac.cluster_scoped_rules,
    }[args.scope]()
    sys.stdout.write(yaml.safe_dump(rules, sort_keys=False))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from voice_operator.compose import dump, render_compose
    from voice_operator.render import render
    from voice_operator.spec import InvalidSpec

    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as fh:
            text = fh.read()
    out: list[Any] = []
    rc = 0
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if args.namespace:
            doc.setdefault("metadata", {})["namespace"] = args.namespace
        try:
            if args.format == "compose":
                compose, notes = render_compose(doc)
                out.append(dump(compose, notes, args.file))
            else:
                out += render(doc)
        except InvalidSpec as e:
            name = (doc.get("metadata") or {}).get("name", "?")
            for err in e.errors:
                print(f"invalid VoiceGateway {name}: {err}", file=sys.stderr)
            rc = 1
    # one Compose file per VoiceGateway, as a YAML stream like the manifests
    sys.stdout.write("---\n".join(out) if args.format == "compose" else _dump_all(out))
    return rc


def cmd_run(args: argparse.Namespace) -> int:
    import os

    os.environ["VOICE_OPERATOR_RESYNC_SECONDS"] = str(args.resync_seconds)
    from voice_operator.handlers import run_operator

    return run_operator(
        namespaces=args.namespace or [],
        all_namespaces=args.all_namespaces,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        verbose=args.verbose,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voice-gateway-operator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the operator")
    scope = r.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    r.add_argument("--liveness", default=DEFAULT_LIVENESS, help="kopf liveness endpoint URL ('' disables)")
    r.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Prometheus /metrics port (0 disables)"
    )
    r.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="drift-correction timer: re-apply every child this often",
    )
    r.add_argument("--verbose", "-v", action="store_true")
    r.set_defaults(func=cmd_run)

    rd = sub.add_parser("render", help="print the manifests the operator would apply")
    rd.add_argument("-f", "--file", required=True, help="VoiceGateway YAML ('-' for stdin)")
    rd.add_argument("--namespace", help="namespace for resources that name none")
    rd.add_argument(
        "--format",
        choices=["kubernetes", "compose"],
        default="kubernetes",
        help="kubernetes: the child manifests; compose: a Compose file for one host (docker compose up -d)",
    )
    rd.set_defaults(func=cmd_render)

    c = sub.add_parser("crd", help="print the CustomResourceDefinition")
    c.set_defaults(func=cmd_crd)

    rb = sub.add_parser("rbac", help="print the RBAC PolicyRules the operator needs")
    rb.add_argument(
        "--scope",
        choices=["cluster", "namespaced", "cluster-scoped"],
        default="cluster",
        help="cluster: every rule (one ClusterRole); namespaced: the rules for a Role; "
        "cluster-scoped: the rules that always need a ClusterRole",
    )
    rb.set_defaults(func=cmd_rbac)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
