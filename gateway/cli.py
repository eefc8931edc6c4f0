"""Console entry point: `voice-gateway serve`."""

from __future__ import annotations

import argparse
import os
import sys


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app
    from gateway.logging_setup import configure_logging
    from gateway.settings import ConfigError, load_settings
    from gateway.shutdown import serve

    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"voice-gateway: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    serve(app, host, port)  # SIGTERM: close WebSockets 1001, drain HTTP for SHUTDOWN_GRACE_SECONDS
    return 0


def _engine_server(args: argparse.Namespace) -> int:
    from gateway.engine_server.app import run
    from gateway.logging_setup import configure_logging
    from gateway.settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"voice-gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    run(settings, args.host, args.port, args.omni_model_name, args.tts_model_name, args.api_key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice-gateway", description="AetherPro Omni Voice Gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway (HTTP + WebSocket) with uvicorn")
    serve.add_argument("--host", default=None, help="bind address (default GATEWAY_HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="port (default GATEWAY_PORT or 8004)")
    serve.set_defaults(func=_serve)
    engine = sub.add_parser(
        "engine-server", help="serve the embedded CPU engines behind vLLM-Omni's API (docs/vllm-omni.md)"
    )
    engine.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    engine.add_argument("--port", type=int, default=8091, help="port (default 8091, as vLLM-Omni's examples)")
    engine.add_argument("--omni-model-name", default="voice-gateway/omni-cpu", help="Omni served name")
    engine.add_argument("--tts-model-name", default="voice-gateway/tts-cpu", help="TTS served name")
    engine.add_argument(
        "--api-key", default=os.environ.get("VLLM_API_KEY"), help="require this Bearer key on /v1 (as vLLM)"
    )
    engine.set_defaults(func=_engine_server)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
