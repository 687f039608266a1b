"""`sluicegate keys create|list|revoke|rotate` and `sluicegate usage`: the operator's commands.

Each takes the same `--config` as `serve` and finds the key store and the ledger through it
(or, with no such sections, in the state directory).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import orjson

from .config.ops_sections import keystore_url, ledger_url

LoadConfig = Callable[[str], Any]
_FILTERS = ("key", "user", "project", "env", "session", "agent", "group", "target", "model")


def register(subparsers: argparse._SubParsersAction, load_config: LoadConfig) -> None:
    keys = subparsers.add_parser("keys", help="create, list, revoke and rotate router-issued keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="{create,list,revoke,rotate}")

    p = ksub.add_parser("create", help="create a key and print its token (shown once)")
    _config_arg(p)
    p.add_argument("--user", help="who the key belongs to")
    p.add_argument("--project", help="project to attribute usage and budgets to")
    p.add_argument("--env", help="environment (dev, ci, prod, ...)")
    p.add_argument("--name", help="a display name (default: user-project-env)")
    p.add_argument(
        "--models", default="*", help="comma-separated model names or patterns it may use (default: *)"
    )
    p.add_argument("--rpm", type=int, help="requests per minute")
    p.add_argument("--tpm", type=int, help="tokens per minute (input + output)")
    p.add_argument("--max-concurrent", type=int, help="requests in flight at once")
    p.add_argument("--budget-usd", type=float, help="spend limit in USD per budget period")
    p.add_argument("--budget-period", choices=["day", "month"], help="budget period (default: month)")
    p.add_argument("--json", action="store_true", help="print the key and token as JSON")
    p.set_defaults(func=lambda a: _run(cmd_keys_create, a, load_config))

    p = ksub.add_parser("list", help="list keys (never their tokens)")
    _config_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: _run(cmd_keys_list, a, load_config))

    p = ksub.add_parser("revoke", help="revoke a key; every replica stops accepting it within seconds")
    _config_arg(p)
    p.add_argument("key_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: _run(cmd_keys_revoke, a, load_config))

    p = ksub.add_parser(
        "rotate", help="replace a key's secret; prints the new token, the old one stops working"
    )
    _config_arg(p)
    p.add_argument("key_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: _run(cmd_keys_rotate, a, load_config))

    p = subparsers.add_parser("usage", help="report requests, tokens and cost from the usage ledger")
    _config_arg(p)
    p.add_argument(
        "--by", default="key", choices=["key", "user", "project", "session", "group", "day", *_FILTERS[3:]]
    )
    p.add_argument("--since", help="start: unix seconds, YYYY-MM-DD, ISO time, today, or 30m/24h/7d ago")
    p.add_argument("--until", help="end (exclusive), same forms")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.add_argument("--records", action="store_true", help="list the individual records as JSON lines")
    p.add_argument("--limit", type=int, help="with --records: at most this many")
    for f in _FILTERS:
        p.add_argument(f"--{f}", dest=f"filter_{f}", metavar="VALUE", help=f"only records with this {f}")
    p.set_defaults(func=lambda a: _run(cmd_usage, a, load_config))


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("SLUICEGATE_CONFIG"),
        help="YAML config, as for serve [SLUICEGATE_CONFIG]; without it, the state directory's SQLite files",
    )


def _run(
    cmd: Callable[[argparse.Namespace, Any], int], args: argparse.Namespace, load_config: LoadConfig
) -> int:
    cfg = None
    if args.config:
        try:
            cfg = load_config(args.config)
        except Exception as exc:
            render = getattr(exc, "render", None)
            print(render() if callable(render) else f"{args.config}: {exc}", file=sys.stderr)
            return 1
    try:
        return cmd(args, cfg)
    except ValueError as exc:
        print(f"sluicegate {getattr(args, 'command', '')}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"sluicegate {getattr(args, 'command', '')}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _keystore(cfg: Any) -> Any:
    from .keys import KeyStore

    return KeyStore.from_url(keystore_url(getattr(cfg, "keystore", None)))


def _describe(e: Any) -> str:
    limits = [
        f"{label} {value}"
        for label, value in (("rpm", e.rpm), ("tpm", e.tpm), ("max concurrent", e.max_concurrent))
        if value
    ]
    if e.budget_usd:
        limits.append(f"budget ${e.budget_usd:.2f}/{e.budget_period or 'month'}")
    attribution = ", ".join(
        f"{k} {v}" for k, v in (("user", e.user), ("project", e.project), ("env", e.env)) if v
    )
    return "; ".join(
        p
        for p in (attribution, "models " + ",".join(e.models), ", ".join(limits) or "no limits of its own")
        if p
    )


def _print_token(entry: Any, token: str, as_json: bool, verb: str) -> None:
    if as_json:
        print(orjson.dumps({"key": entry.to_json(), "token": token}).decode())
        return
    print(f"{verb} key {entry.key_id} ({entry.name}): {_describe(entry)}")
    print("The token is shown once; store it now (e.g. as ANTHROPIC_AUTH_TOKEN):")
    print(token)


def cmd_keys_create(args: argparse.Namespace, cfg: Any) -> int:
    store = _keystore(cfg)
    entry, token = store.create(
        name=args.name,
        user=args.user,
        project=args.project,
        env=args.env,
        models=[m for m in args.models.split(",") if m.strip()],
        rpm=args.rpm,
        tpm=args.tpm,
        max_concurrent=args.max_concurrent,
        budget_usd=args.budget_usd,
        budget_period=args.budget_period,
    )
    _print_token(entry, token, args.json, "created")
    return 0


def cmd_keys_list(args: argparse.Namespace, cfg: Any) -> int:
    entries = _keystore(cfg).list()
    if args.json:
        print(orjson.dumps([e.to_json() for e in entries], option=orjson.OPT_INDENT_2).decode())
        return 0
    rows = [["KEY_ID", "NAME", "USER", "PROJECT", "ENV", "MODELS", "LIMITS", "STATUS"]]
    for e in entries:
        limits = ", ".join(
            f"{label} {v}" for label, v in (("rpm", e.rpm), ("tpm", e.tpm), ("conc", e.max_concurrent)) if v
        )
        if e.budget_usd:
            limits = ", ".join(p for p in (limits, f"${e.budget_usd:.2f}/{e.budget_period or 'month'}") if p)
        rows.append(
            [
                e.key_id,
                e.name,
                e.user or "-",
                e.project or "-",
                e.env or "-",
                ",".join(e.models),
                limits or "-",
                "revoked" if e.revoked else "active",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_keys_revoke(args: argparse.Namespace, cfg: Any) -> int:
    ok = _keystore(cfg).revoke(args.key_id)
    if args.json:
        print(orjson.dumps({"key_id": args.key_id, "revoked": ok}).decode())
    elif ok:
        print(f"revoked key {args.key_id}; every gateway stops accepting it within its keystore refresh_s")
    else:
        print(f"sluicegate keys revoke: no active key {args.key_id}", file=sys.stderr)
    return 0 if ok else 1


def cmd_keys_rotate(args: argparse.Namespace, cfg: Any) -> int:
    try:
        entry, token = _keystore(cfg).rotate(args.key_id)
    except KeyError:
        print(f"sluicegate keys rotate: no active key {args.key_id}", file=sys.stderr)
        return 1
    _print_token(entry, token, args.json, "rotated")
    return 0


def cmd_usage(args: argparse.Namespace, cfg: Any) -> int:
    from .usage import Ledger
    from .usage.report import parse_time, render, render_records

    ledger = Ledger.from_url(ledger_url(getattr(cfg, "ledger", None)))
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    filters = {f: getattr(args, f"filter_{f}") for f in _FILTERS if getattr(args, f"filter_{f}") is not None}
    if args.records:
        sys.stdout.write(render_records(ledger.records(since, until, filters, args.limit)))
        return 0
    sys.stdout.write(render(ledger.query(args.by, since, until, filters), args.by, args.format))
    return 0
