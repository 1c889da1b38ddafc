"""Command line: run the HTTP service, or translate from the shell with the same engine.

    python -m service serve [--host 127.0.0.1] [--port 8000]
    python -m service translate --source de --target en [--beam 5] [--n-best 1] [--json] ["text" ...]

``translate`` reads one text per line from stdin when no text is given, and prints one line per text
(``--json``: one JSON object per text, with scores and alternatives). Settings come from MT_ variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from service.config import SettingsError, load_settings
from service.logs import setup_logging

log = logging.getLogger("service.cli")

EXIT_BAD_MODELS = 2
EXIT_BAD_CONFIG = 2


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api import create_app
    from service.auth import ApiKeyConfigError
    from inference.onnx_model import resolve_providers
    from service.registry import ModelLoadError, verify_models

    updates = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    settings = load_settings(**updates)
    setup_logging(settings.log_level)
    try:
        resolve_providers(settings.device)  # MT_DEVICE=cuda without CUDA: stop now, not serve 503 forever
    except RuntimeError as error:
        log.critical("cannot start: %s", error)
        return EXIT_BAD_CONFIG
    try:
        checked = verify_models(settings)
    except ModelLoadError as error:
        log.critical("cannot start: %s", error)
        return EXIT_BAD_MODELS
    try:
        app = create_app(settings, verified=checked)
    except ApiKeyConfigError as error:
        log.critical("cannot start: %s", error)
        return EXIT_BAD_CONFIG
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the previous handler;
    # a no-op handler there makes a graceful stop exit with status 0 instead of dying by the signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                http=settings.http_parser, loop=settings.event_loop,
                limit_concurrency=settings.max_connections,
                timeout_graceful_shutdown=settings.shutdown_timeout_s)  # type: ignore[arg-type]  # a float works
    return 0


def translate(args: argparse.Namespace) -> int:
    from service.engine import TranslationEngine, TranslationJob
    from service.errors import EngineError
    from service.registry import ModelLoadError

    settings = load_settings(warmup=False)
    setup_logging("WARNING")
    texts = args.text if args.text else [line.rstrip("\n") for line in sys.stdin]
    engine = TranslationEngine(settings)
    try:
        engine.start()
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_MODELS

    async def run() -> None:
        for start in range(0, len(texts), settings.max_texts):
            job = TranslationJob(texts[start : start + settings.max_texts], args.source, args.target, args.format,
                                 args.beam, args.n_best, timeout_s=settings.max_request_timeout_s)
            result = await engine.translate(job)
            for translation in result.translations:
                if args.json:
                    print(json.dumps({"text": translation.text, "score": translation.score,
                                      "source_language": translation.source_language,
                                      "alternatives": [{"text": t, "score": s} for t, s in translation.alternatives]},
                                     ensure_ascii=False))
                else:
                    print(translation.text)
            sys.stdout.flush()

    try:
        asyncio.run(run())
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        engine.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve_parser.add_argument("--host", help="default: MT_HOST or 127.0.0.1")
    serve_parser.add_argument("--port", type=int, help="default: MT_PORT or 8000")
    serve_parser.set_defaults(run=serve)
    translate_parser = commands.add_parser("translate", help="translate arguments or stdin lines")
    translate_parser.add_argument("--source", "-s", required=True, help="source language code, or auto")
    translate_parser.add_argument("--target", "-t", required=True)
    translate_parser.add_argument("--beam", type=int, help="beam size (1 = greedy); default: the model card's")
    translate_parser.add_argument("--n-best", type=int, default=1, help="alternatives come with --json")
    translate_parser.add_argument("--format", choices=["text", "html"], default="text")
    translate_parser.add_argument("--json", action="store_true", help="one JSON object per text")
    translate_parser.add_argument("text", nargs="*", help="texts to translate (default: stdin, one per line)")
    translate_parser.set_defaults(run=translate)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
