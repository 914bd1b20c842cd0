"""`neardup report`: the HTML page of the matches and dedup groups (producer.report builds it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.config.settings import Settings
from producer.commands.console import DEFAULT_OUTPUT, EXIT_OK, EXIT_USAGE, check_output, say


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from producer.report import write_report

    results = Path(args.results) if args.results else None
    groups = Path(args.groups) if args.groups else None
    if results is None and groups is None:  # neither given: the files the other commands write by default
        results = Path(DEFAULT_OUTPUT) if Path(DEFAULT_OUTPUT).is_file() else None
        groups = Path("near_duplicate_groups.json") if Path("near_duplicate_groups.json").is_file() else None
    if results is None and groups is None:
        say(f"report: give a results file ({DEFAULT_OUTPUT}) and/or --groups near_duplicate_groups.json")
        return EXIT_USAGE
    for folder in (args.images, args.queries):
        if folder and not Path(folder).is_dir():
            raise FileNotFoundError(f"not a folder: {folder}")
    for given in (results, groups):
        if given is not None and not given.is_file():
            raise FileNotFoundError(f"report input {given} is not a file")
    check_output(args.output)
    try:
        info = write_report(
            Path(args.output),
            results,
            groups,
            Path(args.images) if args.images else None,
            Path(args.queries) if args.queries else None,
            title=args.title,
            thumb_size=args.thumb_size,
        )
    except (ValueError, TypeError, KeyError, OSError) as exc:  # also json.JSONDecodeError, bad shapes
        say(f"report: {exc}")
        return EXIT_USAGE
    say(
        f"report: {info['queries']} queries, {info['matches']} matches, {info['groups']} groups "
        f"-> {args.output} ({info['bytes'] // 1024} KiB)"
    )
    return EXIT_OK
