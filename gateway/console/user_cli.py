"""``community-gateway user add|remove|list``: manage the console's users file.

::

    community-gateway user add wang --role operator --config site.yaml
    community-gateway user add zhao --role viewer --users-file /etc/community-gateway/users.yaml
    echo "$PASSWORD" | community-gateway user add li --role operator --config site.yaml --password-stdin
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from gateway.console.passwords import MIN_LENGTH, hash_password
from gateway.console.users import ROLES, UserScope, UsersFile
from gateway.errors import ConfigError

EXIT_USAGE = 2


def add_user_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``user`` command on the CLI's subcommands."""
    user = sub.add_parser("user", help="manage the web console's users (password hashes)",
                          description="Add, remove or list security-room console users. The "
                                      "users file holds scrypt hashes only; the gateway re-reads "
                                      "it when it changes.")
    actions = user.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user (asks for the password twice)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="operator: acknowledge, reset, shelve; viewer: read only; "
                          "admin: as operator")
    # A hub console user's scope (the gateway's console ignores it): what they see and act on.
    add.add_argument("--subdistrict", help="hub console: limit the user to this subdistrict")
    add.add_argument("--community", action="append", default=[], metavar="NAME",
                     help="hub console: limit the user to these communities (repeatable)")
    add.add_argument("--compound", action="append", default=[], metavar="NAME",
                     help="hub console: limit the user to these compounds (repeatable)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.add_argument("--replace", action="store_true",
                     help="set a new password and role for an existing user")
    remove = actions.add_parser("remove", help="remove a user (their sessions end at once)")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="list users and roles")
    for p in (add, remove, listing):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", "-c", metavar="SITE.yaml",
                           help="take the users file from this site config's console section")
        where.add_argument("--users-file", "-f", metavar="PATH", help="the users file itself")
    user.set_defaults(handler=run_user_command)


def run_user_command(args: argparse.Namespace) -> int:
    """Carry out ``user add|remove|list``; 0 on success."""
    try:
        users = UsersFile(path=_users_path(args))
        if args.user_action == "list":
            for user in sorted(users.load().values(), key=lambda u: u.name):
                scope = f"\t{user.scope.describe()}" if user.scope else ""
                print(f"{user.name}\t{user.role}{scope}")
            return 0
        if args.user_action == "remove":
            users.remove(args.name)
            print(f"removed {args.name} from {users.path}")
            return 0
        password = _read_password(args.password_stdin)
        scope = None
        if args.subdistrict or args.community or args.compound:
            scope = UserScope(subdistrict=args.subdistrict, communities=args.community,
                              compounds=args.compound)
        users.add(args.name, args.role, hash_password(password), replace=args.replace,
                  scope=scope)
        print(f"{'updated' if args.replace else 'added'} {args.name} ({args.role}) in {users.path}")
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE


def generate_password() -> str:
    """A random password that is easy to read out and type (for demos and first setup)."""
    return "-".join(secrets.token_hex(3) for _ in range(3))


def _users_path(args: argparse.Namespace) -> Path:
    if args.users_file:
        return Path(args.users_file)
    from gateway.config.loader import read_config  # the console section is all it needs

    console = read_config(args.config).console
    if console is None:
        raise ValueError(f"{args.config} has no console section (console: {{users_file: PATH}})")
    path = console.users_file
    return path if path.is_absolute() else Path(args.config).resolve().parent / path


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        raise ValueError("no terminal to ask for the password; use --password-stdin")
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    return password
