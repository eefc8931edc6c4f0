"""A stand-in for NVIDIA's dcgm-exporter on 127.0.0.1 (no GPU exists here): its default counters' exact family
names, HELP texts, units (MiB, %) and labels, including the Kubernetes pod mapping (`namespace`, `pod`,
`container` of the GPU's user), so the chart's GPU queries meet the series shape a cluster scrapes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# dcgm-exporter's default-counters.csv: field, type, help
FIELDS = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
)


@dataclass(frozen=True)
class Gpu:
    index: int
    namespace: str  # the pod using the GPU (dcgm-exporter's Kubernetes pod mapping)
    pod: str
    container: str
    util_percent: float
    used_mib: int
    free_mib: int

    def labels(self) -> str:
        pairs = {
            "gpu": str(self.index),
            "UUID": f"GPU-3f2a9c1e-0000-4000-8000-00000000000{self.index}",
            "pci_bus_id": f"00000000:0{self.index + 1}:00.0",
            "device": f"nvidia{self.index}",
            "modelName": "NVIDIA L40S",
            "Hostname": "gpu-node-1",
            "DCGM_FI_DRIVER_VERSION": "550.127.05",
            "container": self.container,
            "namespace": self.namespace,
            "pod": self.pod,
        }
        return ",".join(f'{k}="{v}"' for k, v in pairs.items())

    def value(self, field: str) -> float:
        return {
            "DCGM_FI_DEV_GPU_UTIL": self.util_percent,
            "DCGM_FI_DEV_FB_FREE": self.free_mib,
            "DCGM_FI_DEV_FB_USED": self.used_mib,
        }[field]


def exposition(gpus: tuple[Gpu, ...]) -> str:
    lines: list[str] = []
    for field, help_ in FIELDS:
        lines += [f"# HELP {field} {help_}", f"# TYPE {field} gauge"]
        lines += [f"{field}{{{g.labels()}}} {g.value(field):g}" for g in gpus]
    return "\n".join(lines) + "\n"


@contextmanager
def fake_dcgm_exporter(gpus: tuple[Gpu, ...]) -> Iterator[int]:
    """Serves /metrics on a free loopback port (yielded) until the block ends."""
    body = exposition(gpus).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="fake-dcgm", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
