"""``taskcore web module:app``: serve the API and dashboard with uvicorn.

Wired into the ``taskcore`` command by :func:`add_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence

from taskcore.errors import ConfigurationError

from .auth import Role

__all__ = ["add_parser", "check_bind", "parse_tokens", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``web`` command to the ``taskcore`` command's subparsers."""
    p = subparsers.add_parser("web", help="serve the web API and live dashboard for module:app")
    p.add_argument("app", help="the app, as package.module:app")
    from taskcore.cli import CONFIG_HELP

    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:ROLE",
        help="a bearer token and its role (viewer, operator or admin); repeat for several. "
        "Required to bind beyond loopback",
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between monitor samples (default 1)"
    )
    p.add_argument(
        "--rate-limit", default="20/s", help="requests per client, e.g. 20/s or 600/m; 'off'"
    )
    p.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a reverse proxy)",
    )
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    p.add_argument("--log-level", default="INFO")


def parse_tokens(specs: Sequence[str]) -> dict[str, str]:
    """``["s3cret:admin", ...]`` -> ``{"s3cret": "admin"}``.

    Raises:
        ConfigurationError: a spec without a role, or an unknown role.
    """
    tokens: dict[str, str] = {}
    for spec in specs:
        token, sep, role = spec.rpartition(":")
        if not sep or not token:
            raise ConfigurationError(
                "--token takes TOKEN:ROLE, e.g. --token s3cret:admin (roles: viewer, "
                "operator, admin)"
            )
        Role.parse(role)
        tokens[token] = role.strip().lower()
    return tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: dict[str, str]) -> None:
    """Refuse to serve open access beyond this machine.

    Raises:
        ConfigurationError: ``host`` is not a loopback address and no token is set.
    """
    if not tokens and not is_loopback(host):
        raise ConfigurationError(
            f"--host {host} would open the dashboard and its admin actions to the network "
            "without authentication; give at least one --token TOKEN:ROLE, or bind to "
            "127.0.0.1"
        )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit status.

    Raises:
        ConfigurationError: a bad option, an unloadable app or a missing extra.
    """
    tokens = parse_tokens(args.token)
    check_bind(args.host, tokens)
    if args.interval <= 0:
        raise ConfigurationError(f"--interval {args.interval}: give seconds > 0")
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            'taskcore web needs the web extra (uvicorn is missing): pip install "taskcore[web]"'
        ) from None
    from taskcore.cli import load_configured
    from taskcore.monitor.monitor import Monitor

    from .application import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = load_configured(args.app, args.config)
    rate = None if args.rate_limit in ("off", "none", "0") else args.rate_limit
    web = create_app(
        app, monitor=Monitor(app, interval=args.interval), tokens=tokens, rate_limit=rate
    )
    uvicorn.run(
        web,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        server_header=False,
    )
    return 0
