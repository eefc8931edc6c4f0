"""Property-based fuzzing of every HTTP route from the gateway's own OpenAPI schema (schemathesis).

Positive cases (valid by the schema) and negative cases (violating it) go to a real gateway process.
A finding is any 5xx answer or a dropped connection; after each operation the gateway must still answer
/health. Prints the case count per route, statuses seen, findings and the rate.

    python bench/fuzz_http.py [--cases 10000] [--time-limit 900] [--url http://127.0.0.1:8004]

Without --url it starts its own gateway (embedded engine) with MAX_TEXT_CHARS=2000, so a positive case
cannot ask for minutes of speech; longer texts are answered 400 by the limit, which is itself checked.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import schemathesis
from schemathesis import GenerationMode

from tests.support import ServerProcess

MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass
class FuzzResult:
    cases: int = 0
    per_route: collections.Counter[str] = field(default_factory=collections.Counter)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    generator_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    not_found: collections.Counter[str] = field(default_factory=collections.Counter)
    unsendable: int = 0  # cases the HTTP client itself refuses to send (e.g. a header with a newline)
    seconds: float = 0.0

    @property
    def findings(self) -> list[str]:
        return self.server_errors + self.crashes


def _alive(base_url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(base_url + "/health", headers=headers, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


def fuzz(
    base_url: str,
    total_cases: int,
    time_limit: float,
    headers: dict[str, str] | None = None,
    exclude_paths: tuple[str, ...] = (),
) -> FuzzResult:
    """Spread `total_cases` over every (operation, mode) pair; loop until reached or out of time.
    Routes whose inputs run out (no parameters) stop early: hypothesis does not repeat itself."""
    headers = headers or {}
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=headers)
    ops = [r.ok() for r in schema.get_all_operations()]
    ops = [op for op in ops if op.path not in exclude_paths]
    result = FuzzResult()
    session = requests.Session()
    deadline = time.monotonic() + time_limit
    start = time.monotonic()
    exhausted: set[tuple[str, str]] = set()
    round_no = 0
    current = {"label": ""}
    while result.cases < total_cases and time.monotonic() < deadline:
        pairs = [(op, m) for op in ops for m in MODES if (op.label, m.value) not in exhausted]
        if not pairs:
            break
        per_pair = max(1, (total_cases - result.cases) // len(pairs))
        for op, mode in pairs:
            if result.cases >= total_cases or time.monotonic() > deadline:
                break
            before = result.cases
            label = current["label"] = f"{op.method.upper()} {op.path}"

            @settings(
                max_examples=per_pair,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=True,
            )
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                if result.cases >= total_cases or time.monotonic() > deadline:
                    return
                label = current["label"]
                result.cases += 1
                result.per_route[label] += 1
                try:
                    response = case.call(base_url=base_url, session=session, headers=headers, timeout=120)
                except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError):
                    result.unsendable += 1
                    return
                except requests.exceptions.ConnectionError as exc:
                    result.crashes.append(f"{label}: {type(exc).__name__}: {exc}"[:300])
                    return
                result.statuses[response.status_code] += 1
                if response.status_code == 404:
                    result.not_found[label] += 1
                if response.status_code >= 500:
                    detail = f"{label} -> {response.status_code}: {response.text[:200]}"
                    result.server_errors.append(f"{detail} | {case.as_curl_command()}"[:800])

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run()
            except Unsatisfiable:
                pass
            except Exception as exc:  # a failure inside generation, not in the gateway: note, go on
                result.generator_errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            if result.cases - before < per_pair:
                exhausted.add((op.label, mode.value))
            if not _alive(base_url, headers):
                result.crashes.append(f"gateway stopped answering /health after {label} ({mode.value})")
                result.seconds = time.monotonic() - start
                return result
        round_no += 1
    result.seconds = time.monotonic() - start
    return result


def report(result: FuzzResult) -> None:
    print(
        f"cases: {result.cases} in {result.seconds:.1f} s ({result.cases / max(result.seconds, 1e-9):.1f}/s)"
    )
    for route, n in sorted(result.per_route.items()):
        print(f"  {n:6d}  {route}")
    print("statuses:", dict(sorted(result.statuses.items())), "404 by route:", dict(result.not_found))
    print(f"unsendable by the client: {result.unsendable}")
    for err, n in result.generator_errors.items():
        print(f"  generator error x{n}: {err}")
    print(f"5xx: {len(result.server_errors)}  crashes: {len(result.crashes)}")
    for finding in result.findings[:20]:
        print("  FINDING", finding)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--url", default=None, help="fuzz a running gateway instead of starting one")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = ServerProcess("serve", env={"MAX_TEXT_CHARS": "2000", "LOG_LEVEL": "warning"})
        server.wait_ready()
        url = server.url
    try:
        result = fuzz(url, args.cases, args.time_limit)
        report(result)
        if server is not None and server.proc.poll() is not None:
            print("gateway process exited:", server.proc.returncode)
            return 1
    finally:
        if server is not None:
            server.stop()
    ok = not result.findings and result.cases >= args.cases
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
