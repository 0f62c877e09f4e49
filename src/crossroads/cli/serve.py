"""``crossroads serve``: the OpenAI-compatible routing server."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve an OpenAI-compatible endpoint that routes each request (POST /v1/chat/completions)",
        description="Route OpenAI chat-completions requests to the pool's models. Without --config the pool is a "
        "local gemma-3-270m served by llama.cpp (needs the `local` extra), plus gpt-4o-mini and gpt-4o when "
        "$OPENAI_API_KEY is set; the route `auto` learns from POST /v1/feedback. See docs/serve.md.",
    )
    parser.add_argument("--config", "-c", metavar="FILE.yaml", help="server configuration (default: the embedded one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--store", metavar="URL", help="override the config's store: sqlite:///FILE.db or postgresql://...")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal

    import uvicorn

    from crossroads.serve.app import make_app
    from crossroads.serve.config import load_config
    from crossroads.serve.defaults import default_config
    from crossroads.serve.gateway import Gateway

    config = load_config(args.config) if args.config else default_config()
    if args.store:
        config = dataclasses.replace(config, store=args.store)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting instead lets the local models stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        config = start_local_models(config, stack)
        app = make_app(Gateway(config), config_path=args.config)
        print(f"crossroads: serving {', '.join(config.model_names)} on http://{args.host}:{args.port}/v1 "
              f"(routes: {', '.join(r.name for r in config.routes) or 'none'})", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def start_local_models(config, stack: contextlib.ExitStack):
    """``config`` with each ``local: true`` model's base_url pointing at a llama.cpp server started now."""
    from crossroads.upstream.local_model import LocalModelServer

    models = []
    for model in config.models:
        if model.local:
            print(f"crossroads: starting the local model {model.name} (llama.cpp) ...", file=sys.stderr)
            server = stack.enter_context(LocalModelServer())
            model = dataclasses.replace(model, base_url=server.base_url, upstream_model=server.model)
        models.append(model)
    return dataclasses.replace(config, models=tuple(models))
