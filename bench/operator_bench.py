#!/usr/bin/env python3
"""Operator benchmark on a REAL local control plane (scripts/k8s): the real `voice-gateway-operator run`
process under a ServiceAccount bound to exactly its RBAC rules.

Figures:
  1. apply -> all children created: one cpu-mode VoiceGateway, time until its 8 children exist (median of N)
  2. 200 resources reconciled from scratch: 200 VoiceGateways created in a burst, time until every child
     exists and every status is written; then the operator restarted, time until all 200 are resumed
  3. the operator's memory (RSS) with 200 resources

Usage: python bench/operator_bench.py [--resources 200] [--single-runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.operator.harness import Api, OperatorProcess, Plane, operator_kubeconfig, wait_for  # noqa: E402

CPU = {"mode": "cpu", "modelCache": {"enabled": False}}
KINDS = {  # path template -> children per resource (cpu mode, model cache off)
    "/api/v1/namespaces/{ns}/configmaps": 1,
    "/api/v1/namespaces/{ns}/services": 3,
    "/apis/apps/v1/namespaces/{ns}/deployments": 3,
    "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies": 1,
}
SELECTOR = "app.kubernetes.io/managed-by=voice-gateway-operator"


def count_children(api: Api, ns: str, selector: str = SELECTOR) -> int:
    return sum(len(api.list(p.format(ns=ns), selector)) for p in KINDS)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def statuses_written(api: Api, ns: str) -> int:
    items = api.list(f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways")
    return sum(1 for i in items if (i.get("status") or {}).get("phase"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resources", type=int, default=200)
    ap.add_argument("--single-runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    per = sum(KINDS.values())
    results: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        plane = Plane(Path(tmp) / "plane")
        plane.ensure_binaries()
        t = time.monotonic()
        plane.up()
        print(f"control plane up in {time.monotonic() - t:.1f}s ({plane.api_url})", flush=True)
        admin = plane.admin()
        kubeconfig = operator_kubeconfig(admin, plane.api_url, Path(tmp) / "kubeconfig")
        # resync 300 s: the drift timer stays out of the measured windows
        op = OperatorProcess(kubeconfig, Path(tmp) / "operator.log", resync=300)
        try:
            op.wait_ready()
            results["operator_rss_idle_mib"] = rss_mib(op.proc.pid)

            # 1. apply -> all children created
            admin.ns("single")
            times = []
            for i in range(args.single_runs):
                name = f"one-{i}"
                t0 = time.monotonic()
                admin.create_vg("single", name, CPU)
                wait_for(
                    lambda n=name: count_children(admin, "single", f"app.kubernetes.io/instance={n}") == per,
                    30,
                    0.005,
                    f"children of {name}",
                )
                times.append(time.monotonic() - t0)
            results["apply_to_children_median_s"] = statistics.median(times)
            results["apply_to_children_max_s"] = max(times)
            print(
                f"apply -> all {per} children: median {statistics.median(times) * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms over {len(times)} runs",
                flush=True,
            )

            # 2. N resources from scratch
            n = args.resources
            admin.ns("fleet")
            t0 = time.monotonic()
            for i in range(n):
                admin.create_vg("fleet", f"vg-{i:03d}", CPU)
            created = time.monotonic() - t0
            wait_for(lambda: count_children(admin, "fleet") == n * per, 600, 0.5, f"{n * per} children")
            children_done = time.monotonic() - t0
            wait_for(lambda: statuses_written(admin, "fleet") == n, 600, 0.5, f"{n} statuses")
            all_done = time.monotonic() - t0
            results.update(
                {
                    f"fleet_{n}_create_requests_s": created,
                    f"fleet_{n}_children_s": children_done,
                    f"fleet_{n}_reconciled_s": all_done,
                }
            )
            print(
                f"{n} resources: created in {created:.1f}s; all {n * per} children after "
                f"{children_done:.1f}s; every status written after {all_done:.1f}s",
                flush=True,
            )
            time.sleep(5)  # let the status refreshes from the Deployment events settle
            results[f"operator_rss_{n}_mib"] = rss_mib(op.proc.pid)
            print(
                f"operator RSS: idle {results['operator_rss_idle_mib']:.0f} MiB, with {n + args.single_runs} "
                f"resources {results[f'operator_rss_{n}_mib']:.0f} MiB",
                flush=True,
            )
            reconciles = op.metric("voice_operator_reconciles_total")
            requests = op.metric("voice_operator_api_requests_total")
            print(f"operator so far: {reconciles:.0f} reconciles, {requests:.0f} API requests", flush=True)
        finally:
            op.stop()

        # 2b. restart: the new operator resumes every resource (re-applies all children)
        op = OperatorProcess(kubeconfig, Path(tmp) / "operator2.log", resync=300)
        try:
            t0 = time.monotonic()
            op.wait_ready()
            total = n + args.single_runs
            wait_for(
                lambda: op.metric("voice_operator_reconciles_total", trigger="resume") >= total,
                600,
                0.5,
                "resume of every resource",
            )
            results[f"resume_{total}_s"] = time.monotonic() - t0
            results[f"operator_rss_after_resume_{total}_mib"] = rss_mib(op.proc.pid)
            print(
                f"operator restart: {total} resources resumed in {results[f'resume_{total}_s']:.1f}s, "
                f"RSS {results[f'operator_rss_after_resume_{total}_mib']:.0f} MiB",
                flush=True,
            )
            forbidden = op.metric("voice_operator_api_requests_total", code="403")
            print(f"403 responses: {forbidden:.0f}", flush=True)
        finally:
            op.stop()
            plane.down()

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
