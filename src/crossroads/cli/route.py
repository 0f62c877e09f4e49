"""``crossroads route``: decide which model should answer one prompt, and say why."""

from __future__ import annotations

import argparse
import json

DEFAULT_POOL = "gpt-4o;gpt-4o-mini"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "route",
        help="pick the model for one prompt (pretrained default router, no training needed) and explain it",
        description="Predict how well each model of the pool would answer PROMPT, estimate each one's cost, and "
        "pick one by a decision rule: with --objective, the best expected reward under it (as a server route with "
        "that objective decides); otherwise the cheapest model predicted within 0.05 of the best. With no "
        "--router-file this uses the pretrained default router, which places any model by its price and tier.",
    )
    parser.add_argument("prompt", help="the prompt to route")
    parser.add_argument("--pool", metavar="MODEL[:price=IN/OUT,tier=T][;MODEL...]",
                        help="the candidate models, ';'-separated (plain names may be ','-separated): catalogue names "
                        "(gpt-4o, claude-3-haiku-20240307, "
                        "...) or any model described by price (US$ per million tokens, IN/OUT) and tier "
                        f"(small, medium, large, frontier), e.g. 'mine:price=0.2,tier=small' (default: {DEFAULT_POOL})")
    parser.add_argument("--strong", help="a strong/weak pair instead of --pool: the strong model")
    parser.add_argument("--weak", help="the weak model of the pair")
    parser.add_argument("--router-file", metavar="FILE.npz", help="a trained router instead of the pretrained default")
    parser.add_argument("--objective", metavar="WEIGHTS",
                        help="weights of quality, cost and latency, e.g. quality=1,cost=0.5: pick the best expected "
                        "reward under them (cost scaled over the pool), as a server route with this objective does")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--rule", metavar="SPEC",
                      help="decision rule: reward (under --objective), within:tolerance=Q or "
                      "utility:willingness_to_pay=W (default: reward with --objective, else within:tolerance=0.05)")
    rule.add_argument("--tolerance", type=float, metavar="Q",
                      help="short for --rule within:tolerance=Q: the cheapest model predicted within Q of the best")
    rule.add_argument("--willingness-to-pay", type=float, metavar="Q_PER_USD",
                      help="short for --rule utility:willingness_to_pay=W: the best predicted quality - W x "
                      "expected cost in US$")
    parser.add_argument("--category", help="the prompt's task as named in the router's training data (e.g. an MMLU "
                                           "subject), for routers that read categories such as gbt")
    parser.add_argument("--embedder", default="minilm-onnx", help="embedder (must match the router's; default minilm-onnx)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossroads.route import route_prompt

    rule = args.rule
    if args.tolerance is not None:
        rule = f"within:tolerance={args.tolerance}"
    elif args.willingness_to_pay is not None:
        rule = f"utility:willingness_to_pay={args.willingness_to_pay}"
    decision = route_prompt(args.prompt, _pool_text(args), router_file=args.router_file, rule=rule,
                            objective=args.objective, embedder=args.embedder, category=args.category)
    if args.json:
        print(json.dumps(decision.to_json(), indent=1))
    else:
        _print(decision)
    return 0


def _pool_text(args: argparse.Namespace) -> str:
    from crossroads.errors import CrossroadsError

    if args.strong or args.weak:
        if not (args.strong and args.weak):
            raise CrossroadsError("give both --strong and --weak, or use --pool")
        if args.pool:
            raise CrossroadsError("give --pool or --strong/--weak, not both (a pair is a pool of two)")
        return f"{args.strong};{args.weak}"
    pool = args.pool or DEFAULT_POOL
    if ";" not in pool and ":" not in pool:  # names alone: commas separate them as well, as --models takes them
        pool = pool.replace(",", ";")
    return pool


def _print(decision) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    table = Table(title=f"router: {decision.router}")
    for heading in ("model", "tier", "US$/M tokens in/out", "predicted quality", "expected cost US$", ""):
        table.add_column(heading, justify="left" if heading in ("model", "tier", "") else "right")
    for row in decision.rows:
        table.add_row(row["model"], row["tier"], row["price"], f"{row['predicted_quality']:.3f}",
                      f"{row['expected_cost_usd']:.6f}", "<- chosen" if row["model"] == decision.model else "")
    console.print(table)
    console.print(f"rule: {decision.rule}")
    console.print(f"chosen: {decision.model}", highlight=False)
