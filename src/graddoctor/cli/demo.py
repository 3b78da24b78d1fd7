"""`make demo`: the seed article's eight claims about vanishing gradients, measured (the `seed-claims` study).

Runs `graddoctor lab run seed-claims` on scikit-learn's digits (1,797 real 8x8 images shipped with
scikit-learn: no download): about 80 small seeded trainings, watched with graddoctor, in parallel
processes; then prints the verdict table (supported / refuted / qualified, each from the rule
written beside its claim) and the path of the HTML report. Finished runs in the output directory
are not trained again, so an interrupted demo resumes where it stopped.

    python -m graddoctor.cli.demo [--quick] [--seeds 3] [--jobs N] [--out demo_runs/seed-claims]
"""

from __future__ import annotations

import argparse
import sys

from graddoctor.errors import GradDoctorError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and depths: under a minute (what the tests run)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (at least 3)")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--out", default=None, help="output directory (default: demo_runs/seed-claims[-quick])")
    args = ap.parse_args(argv)
    from graddoctor.lab.runner import run_study

    out = args.out or ("demo_runs/seed-claims" + ("-quick" if args.quick else ""))
    print(f"graddoctor lab run seed-claims{' --quick' if args.quick else ''} --seeds {args.seeds} --out {out}", flush=True)
    try:
        run = run_study("seed-claims", quick=args.quick, seeds=args.seeds, jobs=args.jobs, out=out)
    except GradDoctorError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from graddoctor.cli._lab import INTERRUPTED

        print(INTERRUPTED, file=sys.stderr)
        return 130
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
