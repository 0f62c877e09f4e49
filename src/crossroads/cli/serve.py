"""``crossroads serve``: the OpenAI-compatible routing server."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import socket
import sys

from crossroads.errors import CrossroadsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve an OpenAI-compatible endpoint that routes each request (POST /v1/chat/completions)",
        description="Route OpenAI chat-completions requests to the pool's models. Without --config or --model the "
        "pool is two small models run here by llama.cpp (gemma-3-270m and SmolLM2-135M-Instruct; needs the `local` "
        "extra), plus gpt-4o-mini and gpt-4o when $OPENAI_API_KEY is set; the route `auto` routes among them with "
        "the pretrained default router and learns from POST /v1/feedback. See docs/serve.md.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", metavar="FILE.yaml", help="server configuration (default: the embedded one)")
    source.add_argument("--model", "-m", action="append", metavar="NAME[:key=value,...]",
                        help="a model of the pool, instead of a config file (repeatable): price=IN/OUT (US$ per "
                        "million tokens), base_url=URL, api_key_env=VARIABLE, upstream_model=NAME, tier=T, provider=P; "
                        "e.g. gpt-4o-mini:price=0.15/0.6,api_key_env=OPENAI_API_KEY. With two or more, the route "
                        "`auto` routes among them")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=8000, help="port, 1 to 65535 (default 8000)")
    parser.add_argument("--store", metavar="URL",
                        help="override the config's store: FILE.db, sqlite:///ABSOLUTE/PATH.db or postgresql://...")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request on standard error: endpoint, status, route, model, cost, "
                        "time (never the prompt)")
    parser.set_defaults(func=run)


def port_number(text: str) -> int:
    """A TCP port from the command line, 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a whole number from 1 to 65535")
    return int(text)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    import uvicorn

    from crossroads.serve.app import make_app
    from crossroads.serve.gateway import Gateway

    config, source = load(args.config, args.model, args.store)
    listener = listen(args.host, args.port)  # a taken or forbidden port fails before anything starts
    if args.access_log:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("crossroads.access").setLevel(logging.INFO)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting instead lets the local models stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)
        config = start_local_models(config, stack)
        gateway = Gateway(config)
        for line in summary(config, source):
            print(f"crossroads: {line}", file=sys.stderr)
        print(f"crossroads: serving on http://{args.host}:{args.port}/v1", file=sys.stderr)
        trusted = list(config.security.trusted_proxies)  # X-Forwarded-For is believed from these alone
        server = uvicorn.Server(uvicorn.Config(make_app(gateway, config_path=args.config), log_level="warning",
                                               timeout_graceful_shutdown=config.shutdown_timeout_s,
                                               proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None))
        server.run(sockets=[listener])
    return 0


def load(config_path: str | None, models: list[str] | None, store: str | None):
    """The configuration to serve, and where it came from (for the banner)."""
    from pathlib import Path

    from crossroads.serve.config import load_config
    from crossroads.serve.defaults import config_from_models, default_config

    if config_path:
        config, source = load_config(config_path), f"config {Path(config_path).resolve()}"
    elif models:
        config, source = config_from_models(models), "models from --model"
    else:
        config, source = default_config(), "the embedded default config (no --config)"
    return (dataclasses.replace(config, store=store) if store else config), source


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or a one-line error saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise CrossroadsError(f"cannot listen on {host}: {error.strerror}; give an address such as 127.0.0.1") from None
    family, kind, protocol, _, address = infos[0]
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise CrossroadsError(f"cannot listen on {host}:{port}: {error.strerror}; "
                              "choose another --port, or stop what is using it") from None
    return listener


def summary(config, source: str) -> list[str]:
    """What a server of ``config`` serves, in plain words: the banner of `crossroads serve` and `config check`."""
    from crossroads.pretrained import DEFAULT_ROUTER_NAME
    from crossroads.store.sql import describe_store

    lines = [f"using {source}", f"store: {describe_store(config.store)}", "pool:"]
    for model in config.models:
        where = "run here by llama.cpp" if model.local else model.base_url
        lines.append(f"  {model.name}: {where}, US$ {model.price_per_mtok_in:g} / {model.price_per_mtok_out:g} "
                     "per million tokens in / out")
    lines.append("routes:" if config.routes else "routes: none (clients name a model)")
    for route in config.routes:
        router = route.router_file and ("the pretrained default router" if route.router_file == DEFAULT_ROUTER_NAME
                                        else f"router {route.router_file}")
        how = (f"{router} with the {route.learner} learner on top" if router and route.learner
               else router or f"the {route.learner} learner")
        models = ", ".join(route.models) if route.models else "the whole pool"
        default = " (the default route)" if route.name == config.default_route else ""
        lines.append(f"  {route.name}{default}: {how}, objective {route.objective}, among {models}")
    lines += [f"warning: {problem}" for problem in config.unset_variables()]
    return lines


def start_local_models(config, stack: contextlib.ExitStack):
    """``config`` with each ``local`` model's base_url pointing at a llama.cpp server started now."""
    from crossroads.upstream.local_model import LocalModelServer

    models = []
    for model in config.models:
        if model.local:
            print(f"crossroads: starting the local model {model.name} (llama.cpp) ...", file=sys.stderr)
            server = stack.enter_context(LocalModelServer.for_model(model.local))
            model = dataclasses.replace(model, base_url=server.base_url, upstream_model=server.model)
        models.append(model)
    return dataclasses.replace(config, models=tuple(models))
