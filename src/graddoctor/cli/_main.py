"""`graddoctor <verb>`: one subcommand per public function, no logic of its own. Nothing imports this.

Exit codes: 0 success, 1 a finding reached --fail-on (diagnose, check), 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import sqlite3
import sys
import time
from typing import Sequence

import numpy as np

from .._outputs import check_output, write_atomic
from ..errors import GradDoctorError
from ._lab import add_lab_verb
from ._live import add_follow_arguments, add_top_verb, follow_diagnosis
from ._report import add_report_verb
from ..reporting.text import format_table, layer_table
from ..store.sqlite import RunStore
from ..store.view import load
from .._text import printable


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (GradDoctorError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(printable(f"graddoctor {args.verb}: error: {message}"), file=sys.stderr)
        return 2
    except SystemExit as err:  # argparse ran before `try`: this one came from the user's MODEL code
        print(f"graddoctor {args.verb}: error: the model's code called sys.exit({err.code!r}) while graddoctor "
              f"ran it; a MODEL factory must return an nn.Module.", file=sys.stderr)
        return 2
    except sqlite3.Error as err:  # every reader turns these into StoreError; this is the last safety net
        print(printable(f"graddoctor {args.verb}: error: damaged store: {err}; restore the store from a copy "
                        f"or record into a new file."), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `graddoctor export ... | head`
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graddoctor", description="Why do this network's gradients vanish or explode?")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    runs = sub.add_parser("runs", help="list the runs in a store")
    runs.add_argument("path", help="run store (SQLite file written by graddoctor.watch)")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="per-layer table of a run's statistics at one step")
    show.add_argument("path")
    show.add_argument("--name", help="run name (default: the latest run)")
    show.add_argument("--step", type=int, help="recorded step (default: the last one)")
    show.set_defaults(func=cmd_show)

    export = sub.add_parser("export", help="write a run's statistics as CSV or Parquet (long format) or TensorBoard")
    export.add_argument("path")
    export.add_argument("dest", nargs="?", metavar="OUT", help="the same as -o OUT")
    export.add_argument("--name", help="run name (default: the latest run)")
    export.add_argument("--format", choices=("csv", "parquet", "tensorboard", "mlflow", "wandb"), default="csv")
    export.add_argument("-o", "--output", help="output file (CSV default: standard output); for tensorboard, "
                        "the log directory")
    export.add_argument("--experiment", help="with --format mlflow: the MLflow experiment (-o: the tracking URI); "
                        "with --format wandb: the W&B project (-o: the directory; WANDB_MODE=offline needs no account)")
    export.add_argument("--follow", type=float, metavar="SECONDS", help="with --format tensorboard: keep mirroring "
                        "the run every SECONDS while it trains; stops when it ends")
    export.set_defaults(func=cmd_export)

    migrate = sub.add_parser("migrate", help="rewrite an old run store (schema 1 or 2) as schema 3, in place, crash-safely")
    migrate.add_argument("path", help="run store (SQLite file written by graddoctor.watch)")
    migrate.set_defaults(func=cmd_migrate)
    _add_diagnose_verbs(sub)
    _add_predict_verb(sub)
    _add_compare_verb(sub)
    add_report_verb(sub)
    add_lab_verb(sub)
    add_top_verb(sub)
    return p


def cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore(args.path, readonly=True)
    try:
        runs = store.runs()
    finally:
        store.close()
    if not runs:
        print(printable(f"{args.path}: no runs"))
        return 0
    rows = [
        [str(r["run_id"]), r["name"], r["status"], str(r["n_steps"]), "-" if r["last_step"] is None else str(r["last_step"]),
         str(r["n_layers"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))]
        for r in runs
    ]
    print(printable(format_table(["id", "name", "status", "steps", "last_step", "layers", "created"], rows,
                                 right=[True, False, False, True, True, True, False])))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from ..store.migrate import migrate

    done = migrate(args.path)
    if done["from_version"] == done["to_version"]:
        print(f"{args.path}: already schema {done['to_version']}, left as it is")
    else:
        print(f"{args.path}: schema {done['from_version']} -> {done['to_version']} ({done['runs']} runs, "
              f"{done['values']} values)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..reporting.terminal import print_layer_table, wants_rich

    run = load(args.path, name=args.name)
    if wants_rich():  # colour on a terminal; piped output stays the plain text
        print_layer_table(run, step=args.step)
    else:
        print(printable(layer_table(run, step=args.step)))
    if run.first_nonfinite:
        nf = run.first_nonfinite
        where = f" ({nf['pass']} pass)" if nf.get("pass") else ""
        print(printable(f"\nfirst non-finite value: step {nf['step']}, layer {nf['layer']!r}, {nf['stat']}{where}"))
    if run.gaps:  # the store could not be written for a while (docs/store.md, Storage faults)
        print(printable("\n" + "\n".join(str(gap) for gap in run.gaps)))
    if run.guard_actions:
        from ..diagnosis.render import guard_lines

        print("\n" + "\n".join(guard_lines(run.guard_actions)))
    return 0


EXPORT_WINDOW = 4096  # recorded steps read at a time: export's memory does not grow with the run


def export_rows(run):
    """(run, step, layer, stat, value) rows of the recorded values only, streamed; per-step scalars have layer ''.

    Ordered by statistic, then by windows of EXPORT_WINDOW steps, then layer and step (a run of at
    most EXPORT_WINDOW recorded steps: statistic, layer, step).
    """
    layers = run.layers
    for stat in run.stats:
        for start in range(0, len(run.steps), EXPORT_WINDOW):
            cols = np.arange(start, min(start + EXPORT_WINDOW, len(run.steps)))
            values, recorded = run.stat_window(stat, cols)
            steps = run.steps[cols].tolist()
            for i, layer in enumerate(layers):
                row_values, row_recorded = values[i].tolist(), recorded[i].tolist()
                for step, value, has in zip(steps, row_values, row_recorded):
                    if has:
                        yield (run.name, step, layer, stat, value)
    for key in run.scalars:  # a key logged at some steps only (hf/grad_norm) has no row at the others
        for step, value, logged in zip(run.steps, run.scalar(key), run.scalar_recorded(key)):
            if logged:
                yield (run.name, int(step), "", key, float(value))


def export_csv_chunks(run):
    """export_rows as CSV text (csv.writer's quoting and line ends), one (text, rows) chunk per layer and window:
    the run, layer and statistic are quoted once per chunk, not once per value."""
    import csv
    import io

    def field(text: str) -> str:
        if text == "":
            return ""
        buf = io.StringIO()
        csv.writer(buf).writerow([text])
        return buf.getvalue()[:-2]

    name = field(run.name)
    for stat in run.stats:
        for start in range(0, len(run.steps), EXPORT_WINDOW):
            cols = np.arange(start, min(start + EXPORT_WINDOW, len(run.steps)))
            values, recorded = run.stat_window(stat, cols)
            steps = run.steps[cols]
            for i, layer in enumerate(run.layers):
                has = recorded[i]
                if has.any():
                    middle = f"{field(layer)},{field(stat)}"
                    lines = "".join([f"{name},{step},{middle},{value!r}\r\n"
                                     for step, value in zip(steps[has].tolist(), values[i][has].tolist())])
                    yield lines, int(has.sum())
    for key in run.scalars:
        logged = run.scalar_recorded(key)
        if logged.any():
            middle = f",{field(key)}"
            lines = "".join([f"{name},{step},{middle},{value!r}\r\n"
                             for step, value in zip(run.steps[logged].tolist(), run.scalar(key)[logged].tolist())])
            yield lines, int(logged.sum())


def cmd_export(args: argparse.Namespace) -> int:
    if args.dest and args.output and args.dest != args.output:
        raise GradDoctorError(f"two outputs given ({args.dest!r} and -o {args.output!r}): give one.")
    args.output = args.output or args.dest
    if args.follow is not None and args.format != "tensorboard":
        raise GradDoctorError(f"--follow works with --format tensorboard only, got --format {args.format}.")
    if args.output and args.format == "mlflow":
        _check_tracking_uri(args.output, args.path)
    elif args.output:
        check_output(args.output, inputs=[args.path], folder=args.format in ("tensorboard", "wandb"), what="-o")
    run = load(args.path, name=args.name)
    if args.format == "tensorboard" and args.follow is not None:
        return _follow_tensorboard(args.path, run.name, args.output, args.follow)
    if args.format == "tensorboard":
        return _export_tensorboard(run, args.output)
    if args.format in ("mlflow", "wandb"):
        return _export_tracker(run, args.format, args.output, args.experiment)
    rows = export_rows(run)
    header = ["run", "step", "layer", "stat", "value"]
    if args.format == "parquet":
        return _export_parquet(rows, header, args.output)
    count = 0
    with write_atomic(args.output, newline="", what="-o") if args.output else contextlib.nullcontext(sys.stdout) as out:
        out.write(",".join(header) + "\r\n")
        for lines, n in export_csv_chunks(run):
            out.write(lines)
            count += n
    if args.output:
        print(f"wrote {count} rows of run {run.name!r} to {args.output}", file=sys.stderr)
    return 0


def _export_tensorboard(run, output: str | None) -> int:
    if not output:
        raise GradDoctorError("--format tensorboard needs a log directory: add -o tb/run1 (then tensorboard --logdir tb).")
    from ..integrations.tensorboard import export_tensorboard

    counts = export_tensorboard(run, output)
    print(f"wrote {counts['scalars']} scalars and {counts['histograms']} histograms of run {run.name!r} to {output}",
          file=sys.stderr)
    return 0


def _check_tracking_uri(uri: str, store: str) -> None:
    """-o of `--format mlflow` is a tracking URI (a server, sqlite:///file.db, file:dir): refuse one that
    names the run store itself, which MLflow would otherwise open as its own database."""
    local = uri
    for scheme in ("sqlite:///", "file://", "file:"):  # sqlite:///x.db is x.db, sqlite:////abs/x.db is /abs/x.db
        if uri.startswith(scheme):
            local = uri[len(scheme):]
            break
    if "://" not in local and os.path.exists(local) and os.path.exists(store) and os.path.samefile(local, store):
        raise GradDoctorError(f"-o {uri!r} is the run store being exported ({store!r}): MLflow would write its "
                              "tables into it. Give MLflow its own tracking URI, e.g. -o sqlite:///mlflow.db.")


def _export_tracker(run, tracker: str, output: str | None, experiment: str | None) -> int:
    from ..integrations.mirror import export_to_mirror

    if tracker == "mlflow":
        from ..integrations.mlflow import MlflowMirror

        mirror = MlflowMirror(tracking_uri=output, experiment=experiment)
    else:
        from ..integrations.wandb import WandbMirror

        mirror = WandbMirror(project=experiment, **({"dir": output} if output else {}))
    counts = export_to_mirror(run, mirror)
    print(f"sent {counts['metrics']} values ({counts['nonfinite']} non-finite) and {counts['findings']} findings of "
          f"run {run.name!r} to {tracker}", file=sys.stderr)
    return 0


def _follow_tensorboard(path: str, name: str, output: str | None, seconds: float) -> int:
    if not output:
        raise GradDoctorError("--format tensorboard needs a log directory: add -o tb/run1 (then tensorboard --logdir tb).")
    from ..integrations.tensorboard import TensorBoardMirror

    mirror = TensorBoardMirror(path, output, name=name)
    try:
        while True:
            mirror.update()
            if not mirror.running:
                break
            time.sleep(max(seconds, 0.0))
    except KeyboardInterrupt:  # Ctrl-C ends following; what was recorded so far is still written
        pass
    finally:
        mirror.close()
    print(f"followed run {name!r} into {output}: steps up to {mirror.written}", file=sys.stderr)
    return 0


def _export_parquet(rows, header: list[str], output: str | None) -> int:
    if not output:
        raise GradDoctorError("--format parquet needs an output file: add -o run.parquet.")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise GradDoctorError(
            "--format parquet needs pyarrow, which is not installed: pip install 'graddoctor[parquet]' "
            "(or pip install pyarrow), or use --format csv."
        ) from None
    import itertools

    count, writer = 0, None
    with write_atomic(output, binary=True, what="-o") as out:
        try:
            while batch := list(itertools.islice(rows, 1 << 16)):  # streamed, one row group per batch
                table = pa.table({name: [r[k] for r in batch] for k, name in enumerate(header)})
                writer = writer or pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
                count += len(batch)
            if writer is None:
                pq.write_table(pa.table({name: [] for name in header}), out)
        finally:
            if writer is not None:
                writer.close()
    print(f"wrote {count} rows to {output}", file=sys.stderr)
    return 0


def _add_diagnose_verbs(sub: argparse._SubParsersAction) -> None:
    fail_on = {"choices": ("info", "warning", "error"), "default": "error",
               "help": "exit 1 when a finding is at least this severe (default: error)"}
    diag = sub.add_parser("diagnose", help="name what is wrong with a recorded run: findings, causes, remedies")
    diag.add_argument("path", help="run store (SQLite file written by graddoctor.watch)")
    diag.add_argument("--name", help="run name (default: the latest run)")
    diag.add_argument("--json", action="store_true", help="print the Findings JSON instead of text")
    diag.add_argument("--fail-on", **fail_on)
    add_follow_arguments(diag)
    diag.set_defaults(func=cmd_diagnose)

    check = sub.add_parser("check", help="train a model a few watched steps on one batch and diagnose it "
                           "(imports and runs MODEL's code)")
    check.add_argument("model", metavar="MODEL", help="path/to/file.py:factory or package.module:factory")
    check.add_argument("--input-shape", help="batch size then sample shape, e.g. 64,784 (random N(0,1) inputs)")
    check.add_argument("--classes", type=int, help="random class targets in [0, CLASSES) and cross-entropy")
    check.add_argument("--vocab", type=int, help="integer token inputs in [0, VOCAB) of --input-shape (batch, length)")
    check.add_argument("--data", help=".npz file with arrays x (and y): real inputs (and targets)")
    check.add_argument("--steps", type=int, default=20, help="training steps to record (default: 20)")
    check.add_argument("--json", action="store_true", help="print the Findings JSON instead of text")
    check.add_argument("--fail-on", **fail_on)
    check.set_defaults(func=cmd_check)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from ..diagnosis import diagnose

    if args.follow:  # until the run ends (or Ctrl-C), then the full diagnosis below
        follow_diagnosis(args)
        print(flush=True)
    return _report(diagnose(args.path, name=args.name), args)


def cmd_check(args: argparse.Namespace) -> int:
    from ._check import check_spec

    d = check_spec(args.model, input_shape=args.input_shape, classes=args.classes, data=args.data, steps=args.steps,
                   vocab=args.vocab)
    return _report(d, args, model=args.model, data=args.data)


def _report(d, args: argparse.Namespace, model: str | None = None, data: str | None = None) -> int:
    """Print a Diagnosis; each finding ends with the `graddoctor compare` command for MODEL and data."""
    from ..diagnosis.render import render_text
    from ..reporting.terminal import print_diagnosis, wants_rich
    from ._commands import compare_line

    line = compare_line(model, data)
    if not args.json and wants_rich():  # colour on a terminal; piped output stays the plain text
        print_diagnosis(d, compare=line)
    else:
        print(d.to_json() if args.json else printable(render_text(d, line)), end="\n" if args.json else "")
    return 1 if d.reaches(args.fail_on) else 0


def _add_predict_verb(sub: argparse._SubParsersAction) -> None:
    pred = sub.add_parser("predict", help="predict gradient flow at initialization from mean-field theory "
                          "(MODEL: imports and runs its code; or a plain MLP from --activation --sigma-w2 --depth)")
    pred.add_argument("model", nargs="?", metavar="MODEL", help="path/to/file.py:factory or package.module:factory")
    pred.add_argument("--input-shape", help="batch size then sample shape, e.g. 256,784 (the batch matters for BatchNorm)")
    pred.add_argument("--activation", help="without MODEL: a plain MLP's activation, e.g. tanh, relu, leaky_relu:0.2")
    pred.add_argument("--sigma-w2", type=float, help="without MODEL: weight variance x fan_in (He: 2, Xavier: 1)")
    pred.add_argument("--sigma-b2", type=float, default=0.0, help="without MODEL: bias variance (default: 0)")
    pred.add_argument("--depth", type=int, help="without MODEL: number of Linear layers")
    pred.add_argument("--json", action="store_true", help="print the prediction as JSON instead of text")
    pred.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train.factory import load_model
    from ._check import parse_shape
    from ..theory import predict, predict_mlp

    free = {"--activation": args.activation, "--sigma-w2": args.sigma_w2, "--depth": args.depth}
    if args.model is None:
        missing = [flag for flag, value in free.items() if value is None]
        if missing:
            raise ConfigError(f"give a MODEL (path/to/file.py:factory), or describe a plain MLP: missing {', '.join(missing)} "
                              "(e.g. graddoctor predict --activation tanh --sigma-w2 1.5 --sigma-b2 0.05 --depth 50).")
        prediction = predict_mlp(args.activation, args.sigma_w2, args.sigma_b2, args.depth)
    elif any(value is not None for value in free.values()):
        raise ConfigError("give either MODEL or --activation/--sigma-w2/--depth, not both.")
    else:
        shape = parse_shape(args.input_shape) if args.input_shape is not None else None
        prediction = predict(load_model(args.model), input_shape=shape[1:] if shape else None,
                             batch=shape[0] if shape else None)
    print(prediction.to_json() if args.json else printable(str(prediction)))
    return 0


def _add_compare_verb(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("compare", help="train MODEL and remedied variants over seeds, side by side, with verdicts "
                          "(imports and runs MODEL's code)")
    comp.add_argument("model", metavar="MODEL", help="path/to/file.py:factory or package.module:factory")
    source = comp.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=".npz file with arrays x and y (integer y: classification)")
    source.add_argument("--dataset", choices=("digits", "mnist1d"), help="a dataset that needs no download")
    comp.add_argument("--remedies", required=True, help="comma-separated remedy ids; '+' combines, e.g. "
                      "he_init,leaky_relu,batch_norm,residual,relu+he_init")
    comp.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default: 300)")
    comp.add_argument("--seeds", type=int, default=3, help="runs per variant (default: 3)")
    comp.add_argument("--jobs", type=int, help="worker processes (default: the number of CPUs)")
    comp.add_argument("--store", help="SQLite run store for every run (default: not kept)")
    comp.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 0.001)")
    comp.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="optimizer (default: adam)")
    comp.add_argument("--json", action="store_true", help="print the comparison as JSON instead of the table")
    comp.add_argument("--backend", choices=("process", "ray"), default="process",
                      help="process: worker processes here; ray: one Ray task per run (the [ray] extra)")
    comp.add_argument("--ray-address", default=None, metavar="ADDRESS",
                      help="with --backend ray: the cluster ('auto', 'ray://head:10001'; default: a local Ray)")
    comp.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..remedies.compare import compare
    from ..data import load_npz

    data = load_npz(args.data) if args.data else args.dataset
    c = compare(args.model, data, remedies=args.remedies, steps=args.steps, seeds=args.seeds, jobs=args.jobs,
                store=args.store, lr=args.lr, optimizer=args.optimizer, backend=args.backend, ray_address=args.ray_address)
    print(c.to_json() if args.json else printable(str(c)), end="\n" if args.json else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
