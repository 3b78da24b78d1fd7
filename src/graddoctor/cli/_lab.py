"""`graddoctor lab list|run`: registered by cli._main; imports the lab only when the verb runs."""

from __future__ import annotations

import argparse
import sys

INTERRUPTED = ("interrupted: the runs that finished are kept in the output directory's store.db; "
               "run the same command again to train only the rest.")


def add_lab_verb(sub: argparse._SubParsersAction) -> None:
    """Register `graddoctor lab list` and `graddoctor lab run STUDY|file.toml [--quick] [--seeds K] [--jobs J] [--out DIR]`."""
    lab = sub.add_parser("lab", help="reproducible studies with measured verdicts (seed-claims, depth-sweep, ...)")
    verbs = lab.add_subparsers(dest="lab_verb", metavar="{list,run}")
    ls = verbs.add_parser("list", help="the studies, one a line")
    ls.set_defaults(func=cmd_list)
    run = verbs.add_parser("run", help="train a study's sweep, analyse it, write results.json and report.html")
    run.add_argument("study", help="a study name (graddoctor lab list) or a study .toml file")
    run.add_argument("--quick", action="store_true", help="the study's quick variant (under a minute on 2 cores)")
    run.add_argument("--seeds", type=int, default=None, help="seeds per configuration (default 3)")
    run.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    run.add_argument("--out", default=None, help="directory for store.db, results.json, report.html "
                                                 "(default: lab_runs/STUDY[-quick]); finished runs there are not trained again")
    run.add_argument("--backend", choices=("process", "ray"), default="process",
                     help="process: worker processes here; ray: one Ray task per run (the [ray] extra)")
    run.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="with --backend ray: the cluster ('auto', 'ray://head:10001'; default: a local Ray)")
    run.add_argument("--no-report", action="store_true", help="skip the HTML report (no matplotlib needed)")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")
    run.set_defaults(func=cmd_run)
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])


def cmd_list(args: argparse.Namespace) -> int:
    from ..lab.registry import studies

    found = studies()
    width = max(map(len, found), default=0)
    for name, study in found.items():
        print(f"{name:<{width}}  {study.title}")  # registered studies: graddoctor's own text
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..lab.runner import run_study

    try:
        run = run_study(args.study, quick=args.quick, seeds=args.seeds, jobs=args.jobs, out=args.out,
                        progress=args.progress, report=not args.no_report, backend=args.backend,
                        ray_address=args.ray_address)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    from .._text import printable

    print(printable(str(run)))
    sys.stdout.flush()
    return 0
