"""``polysteer serve``: the OpenAI-compatible server (see docs/serve.md)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Any

from polysteer.cli.main import Command, CommandError, load_model_arg
from polysteer.io.console import say
from polysteer.io.paths import home


def _serve_args(p: argparse.ArgumentParser) -> None:
    from polysteer.serve import ServeLimits

    d = ServeLimits()
    p.add_argument("--model", default="smollm2", help="text model to serve (default smollm2)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every /v1 request")
    p.add_argument("--styles-dir", default=None,
                   help="where named styles are saved (default <polysteer home>/serve/styles)")
    play = p.add_argument_group("playground (the web page at /)")
    play.add_argument("--image-model", default="avatars",
                      help="image model of the page's image and create tabs, loaded on first use "
                           "(default avatars)")
    play.add_argument("--voice-model", default="joe",
                      help="voice model of the page's voice and create tabs, loaded on first use "
                           "(default joe)")
    play.add_argument("--no-playground", action="store_true",
                      help="serve the API only, no web page at /")
    prefs = p.add_mutually_exclusive_group()
    prefs.add_argument("--preferences", metavar="PATH", default=None,
                       help="remember users' preferences in this SQLite file (needs "
                            "polysteer.preferences)")
    prefs.add_argument("--no-preferences", action="store_true",
                       help="do not remember preferences")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-intensity", type=float, default=d.max_intensity,
                        help=f"largest |intensity| a request may use (default {d.max_intensity})")
    limits.add_argument("--max-tokens", type=int, default=d.max_tokens,
                        help=f"largest max_tokens a request may ask for (default {d.max_tokens})")
    limits.add_argument("--default-tokens", type=int, default=d.default_tokens,
                        help=f"max_tokens when a request gives none (default {d.default_tokens})")
    limits.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens,
                        help=f"longest prompt in tokens (default {d.max_prompt_tokens})")
    limits.add_argument("--max-queue", type=int, default=d.max_queue,
                        help=f"requests waiting or running at once (default {d.max_queue})")
    limits.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                        help=f"largest request body (default {d.max_body_bytes})")
    limits.add_argument("--max-batch", type=int, default=d.max_batch,
                        help=f"requests sharing one generation (default {d.max_batch})")
    limits.add_argument("--batch-window-ms", type=float, default=d.batch_window_s * 1000,
                        help="how long the batcher waits for more requests (default "
                             f"{d.batch_window_s * 1000:g} ms)")
    p.add_argument("--shutdown-grace", type=float, default=10.0,
                   help="seconds in-flight requests may finish after Ctrl-C (default 10)")


def preference_source(args: argparse.Namespace) -> Any:
    """``polysteer.preferences.PreferenceStore(PATH)`` (default ``<polysteer home>/serve/
    preferences.sqlite``) when ``polysteer.preferences`` is importable; None with
    ``--no-preferences`` or without that module (a warning if ``--preferences`` asked for it)."""
    if args.no_preferences:
        return None
    if importlib.util.find_spec("polysteer.preferences") is None:
        if args.preferences:
            say("warning: --preferences ignored: this install has no polysteer.preferences")
        return None
    module = importlib.import_module("polysteer.preferences")
    path = args.preferences or home() / "serve" / "preferences.sqlite"
    return module.PreferenceStore(path)


def _serve_run(args: argparse.Namespace) -> int:
    from polysteer.serve import PlaygroundConfig, ServeLimits, TextModel, require_server_packages, serve

    require_server_packages()
    numbers = {"--max-intensity": args.max_intensity, "--max-tokens": args.max_tokens,
               "--default-tokens": args.default_tokens, "--max-prompt-tokens": args.max_prompt_tokens,
               "--max-queue": args.max_queue, "--max-body-bytes": args.max_body_bytes,
               "--max-batch": args.max_batch}
    for flag, value in numbers.items():
        if not value > 0:
            raise CommandError(f"{flag} must be positive, got {value}")
    if not 0 < args.port < 65536:
        raise CommandError(f"--port must be 1..65535, got {args.port}")
    limits = ServeLimits(max_intensity=args.max_intensity, max_tokens=args.max_tokens,
                         default_tokens=min(args.default_tokens, args.max_tokens),
                         max_prompt_tokens=args.max_prompt_tokens, max_queue=args.max_queue,
                         max_body_bytes=args.max_body_bytes, max_batch=args.max_batch,
                         batch_window_s=max(0.0, args.batch_window_ms) / 1000)
    preferences = preference_source(args)
    adapter = load_model_arg(args.model, modality="text")
    TextModel(adapter)  # a text model the server can serve (a tokenizer), before saying so
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        say(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it")
    say(f"serving {args.model} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)")
    playground: Any = False
    if not args.no_playground:
        playground = PlaygroundConfig(image_model=args.image_model, voice_model=args.voice_model)
        say(f"playground: http://{args.host}:{args.port}/ (image {args.image_model}, voice "
            f"{args.voice_model}, loaded on first use)")
    serve(adapter, host=args.host, port=args.port, name=args.model, limits=limits,
          api_key=args.api_key, styles_dir=args.styles_dir, preferences=preferences,
          shutdown_grace_s=args.shutdown_grace, playground=playground)
    return 0


SERVE_COMMAND = Command(
    "serve a text model over an OpenAI-compatible HTTP API with per-request steering",
    _serve_args, _serve_run,
    description="Serve a text model on http://HOST:PORT/v1 (loopback by default): chat and text "
                "completions (streamed or not) with an extra 'steering' field, named styles, "
                "feature read-outs and search. Concurrent requests with different styles share "
                "forward passes; a web playground at http://HOST:PORT/ (docs/playground.md). See "
                "docs/serve.md.")
