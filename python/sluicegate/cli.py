"""The `sluicegate` command: compile-config for CI, serve for production, and helpers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .compile import compile_file, dump_snapshot, load_snapshot
from .config import ConfigError, ConfigIssue


def _env(name: str, default: Any) -> Any:
    return os.environ.get(name, default)


def cmd_compile(args: argparse.Namespace) -> int:
    try:
        compiled = compile_file(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''}", file=sys.stderr)
        for issue in exc.issues:
            print(issue.render(args.config), file=sys.stderr)
        return 1
    data = dump_snapshot(compiled)
    if args.output:
        Path(args.output).write_bytes(data)
        print(
            f"{args.config}: ok, snapshot {compiled['hash'][:16]} written to {args.output}", file=sys.stderr
        )
    else:
        print(f"{args.config}: ok, snapshot {compiled['hash'][:16]}", file=sys.stderr)
    return 0


# Granian's Rust side allocates with jemalloc, which by default keeps freed pages for 10 s and
# returns them only when it allocates again: after a burst of streams an idle worker kept all
# of its peak memory. Returning pages at once measured no CPU difference on short requests or
# paced streams, and RSS after 2,000 streams closed 1.28x instead of 1.55x the idle figure
# (docs/performance.md). jemalloc reads this when Granian loads, so it is set before the
# import; an operator's own value wins.
_JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit (inherited by the workers).

    Each stream holds two descriptors (the client's and the upstream's), and a soft limit of
    1,024 is still common in containers: 500 streams would hit it. Returns (soft, hard).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # a hard limit of "unlimited" some kernels refuse: keep ours
            pass
    return soft, hard


def cmd_serve(args: argparse.Namespace) -> int:
    from . import allocator

    try:
        env = allocator.reexec_env(args.malloc, dict(os.environ))
    except allocator.AllocatorError as exc:
        print(f"sluicegate serve: {exc}", file=sys.stderr)
        return 2
    if env is not None:
        allocator.reexec(args.argv, env)
    os.environ.setdefault("_RJEM_MALLOC_CONF", _JEMALLOC_CONF)
    raise_open_files_limit()
    from .server import ServeOptions, serve
    from .snapshot import Snapshot, SnapshotError

    config, snapshot = args.config, args.snapshot
    if bool(config) == bool(snapshot):
        print("sluicegate serve: give exactly one of --config or --snapshot", file=sys.stderr)
        return 2
    try:
        # Check everything in the main process first, so a bad config fails here, once, clearly.
        compiled = compile_file(config) if config else load_snapshot(Path(snapshot).read_bytes())
        from .services import check_sections

        check_sections(Snapshot(compiled))
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except (SnapshotError, ValueError, OSError) as exc:
        print(f"sluicegate serve: {exc}", file=sys.stderr)
        return 1
    os.environ["SLUICEGATE_WATCH_S"] = str(args.watch_s)
    os.environ["SLUICEGATE_WORKERS"] = str(args.workers)  # the workers' metrics need it
    if config:
        # absolute(), not resolve(): a ConfigMap mount's file is a symlink into a versioned
        # directory the kubelet replaces; workers must keep reading the stable name.
        os.environ["SLUICEGATE_CONFIG"] = str(Path(config).absolute())
        os.environ.pop("SLUICEGATE_SNAPSHOT", None)
    else:
        os.environ["SLUICEGATE_SNAPSHOT"] = str(Path(snapshot).absolute())
        os.environ.pop("SLUICEGATE_CONFIG", None)
    if args.server == "native" and args.http != "1":
        print("sluicegate serve: --server native speaks HTTP/1.1 only (--http 1)", file=sys.stderr)
        return 2
    server = resolve_server(args.server, args.http)
    serve(
        ServeOptions(
            host=args.host,
            port=args.port,
            workers=args.workers,
            drain_s=args.drain_s,
            http=args.http,
            sched=args.sched,
            server=server,
        )
    )
    return 0


def resolve_server(server: str, http: str) -> str:
    """The HTTP server `auto` stands for: the native front, unless HTTP/2 is asked for.

    The native front costs less CPU per streamed event and bounds what a slow client makes the
    gateway buffer (docs/operations.md, "The native front"); it speaks HTTP/1.1 only.
    """
    if server != "auto":
        return server
    return "native" if http == "1" else "granian"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluicegate", description="A fast, faithful LLM gateway for coding agents."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile-config", help="validate a config file and write its compiled snapshot")
    p.add_argument("config", help="path to sluicegate.yaml")
    p.add_argument("-o", "--output", help="write the snapshot (JSON) here")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("serve", help="serve the gateway")
    p.add_argument(
        "--config", default=_env("SLUICEGATE_CONFIG", None), help="YAML config [SLUICEGATE_CONFIG]"
    )
    p.add_argument(
        "--snapshot",
        default=_env("SLUICEGATE_SNAPSHOT", None),
        help="compiled snapshot [SLUICEGATE_SNAPSHOT]",
    )
    p.add_argument(
        "--host", default=_env("SLUICEGATE_HOST", "127.0.0.1"), help="bind address [SLUICEGATE_HOST]"
    )
    p.add_argument(
        "--port", type=int, default=int(_env("SLUICEGATE_PORT", 8080)), help="port [SLUICEGATE_PORT]"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=int(_env("SLUICEGATE_WORKERS", 1)),
        help="worker processes [SLUICEGATE_WORKERS]",
    )
    p.add_argument(
        "--drain-s",
        type=float,
        default=float(_env("SLUICEGATE_DRAIN_S", 30)),
        help="on SIGTERM, let streams finish for up to this many seconds [SLUICEGATE_DRAIN_S]",
    )
    p.add_argument(
        "--watch-s",
        type=float,
        default=float(_env("SLUICEGATE_WATCH_S", 0)),
        help="also reload when the config file changes, checking every N seconds; 0 = off [SLUICEGATE_WATCH_S]",
    )
    p.add_argument(
        "--http", choices=["1", "2", "auto"], default=_env("SLUICEGATE_HTTP", "1"), help="[SLUICEGATE_HTTP]"
    )
    p.add_argument(
        "--server",
        choices=["auto", "native", "granian"],
        default=_env("SLUICEGATE_SERVER", "auto"),
        help="native: sluicegate's own HTTP/1.1 front, where the event loop writes to the client "
        "socket itself (less CPU per event, bounded buffering; HTTP/1.1 only); granian: Granian "
        "(HTTP/1.1 and HTTP/2); auto: native with --http 1, granian otherwise [SLUICEGATE_SERVER]",
    )
    p.add_argument(
        "--sched",
        choices=["batch", "normal"],
        default=_env("SLUICEGATE_SCHED", "batch"),
        help="CPU scheduling policy of the server's threads: batch lets the event loop finish its "
        "work before Granian's I/O thread runs (cheaper per request); normal for hosts where the "
        "gateway shares cores with latency-sensitive work [SLUICEGATE_SCHED]",
    )
    p.add_argument(
        "--malloc",
        choices=["auto", "jemalloc", "system"],
        default=_env("SLUICEGATE_MALLOC", "auto"),
        help="allocator of the Python heap: jemalloc returns the memory of ended streams (auto: "
        "jemalloc when libjemalloc.so.2 is installed, else the system's) [SLUICEGATE_MALLOC]",
    )
    p.set_defaults(func=cmd_serve)

    from .cli_ops import register

    register(sub, load_config_for_cli)

    p = sub.add_parser("mock-upstream", help="a standalone fast fake Anthropic upstream (demos, load tests)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9999)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_mock_upstream)
    return parser


def load_config_for_cli(path: str) -> Any:
    """The validated config with `${VAR}` references resolved from this environment."""
    from .config import read_document, validate_document
    from .config._env import MissingEnv, resolve_tree

    doc = read_document(path)
    try:
        doc.data = resolve_tree(doc.data)
    except MissingEnv as exc:
        raise ConfigError([ConfigIssue("<env>", str(exc))], path) from None
    return validate_document(doc)


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from .providers.mock_server import run

    run(args.host, args.port, args.workers)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # `serve` may re-execute itself
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
