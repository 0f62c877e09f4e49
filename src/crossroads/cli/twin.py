"""``crossroads twin``: serve a dataset's recorded answers as OpenAI-compatible models (a production twin)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from crossroads.cli.common import DATASET_HELP, add_dataset_formats
from crossroads.cli.serve import listen, port_number
from crossroads.errors import CrossroadsError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "twin",
        help="serve a dataset's recorded answers as OpenAI-compatible models, to replay traffic against",
        description="Serve on 127.0.0.1:PORT/v1 an OpenAI-compatible upstream in which every model of the dataset "
        "answers each of its prompts as recorded: the recorded response, usage token counts that reproduce the "
        "recorded cost under the pool's prices, and (with --latency-scale) the recorded or estimated latency. "
        "A prompt or model it does not hold gets a 404 saying so. --write-config writes a `crossroads serve` "
        "config whose models are this twin; then `crossroads replay` sends the dataset's queries through the "
        "server, and `crossroads report` can be checked against the known truth.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", "-d", action="append", required=True, metavar="FORMAT:PATH", help=DATASET_HELP)
    parser.add_argument("--port", type=port_number, default=8001, help="port on 127.0.0.1 (default 8001)")
    parser.add_argument("--latency-scale", type=_scale, default=0.0,
                        help="answer after the recorded latency times this (default 0: at once)")
    parser.add_argument("--write-config", metavar="FILE.yaml",
                        help="write a `crossroads serve` config whose models are this twin")
    add_dataset_formats(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from crossroads.upstream.fake import FakeUpstream, make_app
    from crossroads.upstream.recorded import Recording

    config_path = Path(args.write_config) if args.write_config else None
    if config_path is not None and not config_path.parent.is_dir():
        raise CrossroadsError(f"--write-config {args.write_config}: the directory {config_path.parent} does not "
                              "exist; create it or write the config elsewhere")
    recording = Recording.load(args.dataset, args.latency_scale)
    listener = listen("127.0.0.1", args.port)  # a taken port fails before anything is written
    base_url = f"http://127.0.0.1:{args.port}/v1"
    try:
        if config_path is not None:
            write_config(recording, base_url, config_path)
        dataset = recording.dataset
        start = (f"start the router with: crossroads serve --config {args.write_config}" if config_path is not None
                 else "add --write-config twin.yaml for a `crossroads serve` config of these models")
        print(f"twin of {dataset.n_queries:,} queries x {len(dataset.model_names)} models "
              f"({', '.join(dataset.model_names)}) at {base_url}; {start}", flush=True)
        app = make_app(FakeUpstream(recording=recording, keep_requests=False))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0


def write_config(recording, base_url: str, path: Path) -> None:
    """Write the `crossroads serve` config whose models are ``recording`` answered at ``base_url``."""
    import yaml

    try:
        path.write_text(yaml.safe_dump(recording.serve_config(base_url), sort_keys=False), encoding="utf-8")
    except OSError as error:
        raise CrossroadsError(f"cannot write --write-config {path}: {error.strerror}") from None


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value
