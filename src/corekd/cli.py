"""The ``corekd`` command. Thin: parse, call the library, print.

A user error prints one line (``error: FILE: FIELD: what was expected``) and exits with 2;
``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shlex
import signal
import sys
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from corekd.errors import CorekdError, from_validation_error
from corekd.experiments.folder import refuse_inside_experiment
from corekd.version import __version__

app = typer.Typer(
    help="Robust multimodal emotion recognition in conversations when modalities go missing (CoRe-KD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: boolean options read as flags (--json), not as "--json <bool>"
)
data_app = typer.Typer(
    help="Corpus tools: generate the synthetic corpus, inspect and probe a corpus.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")
config_app = typer.Typer(
    help="Run configurations: check one (and its corpus) without training.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")
features_app = typer.Typer(
    help="From raw media to features, offline (docs/features.md).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(features_app, name="features")

_state = {"debug": False}
out_console = Console()
err_console = Console(stderr=True)


def _one_line(text: str) -> None:
    err_console.print(" ".join(str(text).split()), markup=False, highlight=False, soft_wrap=True)


def user_error(exc: BaseException) -> CorekdError | None:
    """The user-facing form of an exception caused by input (files, options, values), or None (a bug)."""
    if isinstance(exc, CorekdError):
        return exc
    if isinstance(exc, ValidationError):  # a model validated outside the config loader
        return from_validation_error(exc, None)
    if isinstance(exc, UnicodeDecodeError):
        return CorekdError(f"not a UTF-8 text file (undecodable byte at position {exc.start})")
    if isinstance(exc, OSError):  # the user's files and folders: missing, unreadable, a file where a folder goes
        where = exc.filename if exc.filename is not None else None
        return CorekdError(f"{exc.strerror or type(exc).__name__} (check the path and its permissions)", path=where)
    return None


def _guarded(fn):
    """The CLI's one error boundary: every user error becomes one line and exit code 2.

    Anything else is a bug in corekd: one line, exit code 1 and a hint to re-run with --debug.
    ``--debug`` shows the traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: classify, never leak a traceback
            if _state["debug"]:
                raise
            error = user_error(exc)
            if error is not None:
                _one_line(f"error: {error}")
                raise typer.Exit(2) from None
            _one_line(
                f"internal error (a bug in corekd, please report it): {type(exc).__name__}: {exc} "
                "(re-run with --debug for the traceback)"
            )
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"corekd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks on errors (accepted anywhere on the line)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train a complete-view teacher, distil it into a robust student, evaluate under missing modalities."""
    _state["debug"] = _state["debug"] or debug


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops a run or a grid like Ctrl-C (finished work is kept); yields the signals received.

    Only the first signal interrupts: a second one while the interrupted work writes what it keeps is recorded,
    not raised (the exit code still names the first)."""
    from corekd.experiments.engine import note_signal  # here: the engine (and torch) load with the command

    received: list[int] = []

    def on_term(signum, frame):
        received.append(signum)
        if len(received) == 1:
            note_signal(signum)  # an interrupt torch turns into another error is still this signal (by_signal)
            raise KeyboardInterrupt

    note_signal(None)
    try:
        previous, installed = signal.signal(signal.SIGTERM, on_term), True
    except ValueError:  # not the main thread (an embedding application): leave its signal handling alone
        previous, installed = None, False
    try:
        yield received
    finally:
        note_signal(None)
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def parse_seeds(values: list[str] | None, also: str = "") -> list[int] | None:
    """``--seeds 0,1,2``, ``--seeds "0 1 2"`` or ``--seeds 0 --seeds 1``; ``also``: what else the option takes
    (e.g. ``"all or "``), for the message."""
    if not values:
        return None
    seeds = []
    for value in values:
        for part in re.split(r"[,\s]+", value.strip()):
            if not part:
                continue
            if not re.fullmatch(r"-?\d+", part):
                raise CorekdError(f"expected {also}integers like 0,1,2, got '{value}'", field="--seeds")
            seeds.append(int(part))
    return seeds


@app.command()
@_guarded
def run(
    config: Path | None = typer.Argument(
        None,
        help="Run config (YAML). Without one, `corekd run` starts the full quickstart: configs/quickstart.yaml "
        "(12 models, about 4 minutes on 2 CPU cores).",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Output folder: new or empty, or an earlier run with --resume/--overwrite. Default: runs/<config name>.",
    ),
    seeds: list[str] | None = typer.Option(None, "--seeds", help="Seeds overriding the config, e.g. 0,1,2."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (overrides the config)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Finish an interrupted run in --out (same config): "
        "finished models are kept, only missing ones are trained.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Start again in --out: an earlier run there is first moved aside to <out>.old-<time> (never deleted).",
    ),
) -> None:
    """Train the teacher and the students, evaluate every method under every protocol, write the report.

    A bare `corekd run` starts the full quickstart (configs/quickstart.yaml). Writes
    corekd-run.json, config.yaml, results.json, report.md and checkpoints/ into the output folder.
    Everything is checked before anything is written. Ctrl-C (or SIGTERM) keeps every finished
    model; `--resume` continues from there.
    """
    from corekd.experiments import Interrupted
    from corekd.experiments import run as run_experiment
    from corekd.experiments.engine import by_signal
    from corekd.progress import default_reporter

    seed_list = parse_seeds(seeds)
    words = ["corekd", "run", *([str(config)] if config else [])]
    words += [*(["--out", str(out)] if out else []), *(["--seeds", ",".join(map(str, seed_list))] if seed_list else [])]
    words += ["--device", device] if device else []
    command = " ".join(shlex.quote(w) for w in words)
    with _sigterm_as_interrupt() as received:
        try:
            result = run_experiment(
                config,
                out,
                seeds=seed_list,
                device=device,
                reporter=default_reporter(),
                command=command,
                resume=resume,
                overwrite=overwrite,
            )
        except Interrupted as stop:
            _one_line(stop.line())
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
        except (KeyboardInterrupt, Exception) as exc:  # before any model was finished
            if not by_signal(exc):
                raise
            _one_line(
                f"interrupted: no model finished; start again with: {command}"
                + (" --resume" if out is not None and out.exists() else "")
            )
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
    print(f"report: {result.report or result.out_dir / 'report.md'}")


@app.command()
@_guarded
def compare(
    config: Path = typer.Argument(
        ...,
        help="A grid config (YAML): a run config plus `corpora` and `reference` "
        "(docs/compare.md), e.g. configs/smoke_grid.yaml or configs/paper_grid.yaml.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Grid folder: new or empty, or an earlier attempt of the "
        "same grid (its finished cells are kept). Default: runs/<config name>.",
    ),
    workers: int = typer.Option(
        1, "--workers", help="Cells run at once (worker processes; Ray: concurrent tasks on a local instance)."
    ),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads per worker."),
    backend: str = typer.Option(
        "local", "--backend", help="local (worker processes here) or ray (pip install 'corekd[cluster]')."
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="With --backend ray: a running Ray cluster, e.g. "
        "ray://head:10001 or auto (default: start a local Ray instance).",
    ),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (overrides the config)."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Start again in --out: an earlier grid there is first moved aside to <out>.old-<time> (never deleted).",
    ),
) -> None:
    """Run a whole comparison: corpus x method variant x seed cells in parallel, one report.

    Each corpus and seed trains its teacher once; its students reuse it. Started again with the
    same command, a grid keeps every finished cell and runs only the missing ones (the records
    are the same as an uninterrupted run's). Writes results.json, analyses.json, figures/,
    report.md and report.html into the grid folder.
    """
    from corekd.experiments import Interrupted
    from corekd.experiments import compare as run_grid
    from corekd.experiments.engine import by_signal
    from corekd.progress import default_grid_progress

    words = ["corekd", "compare", str(config), *(["--out", str(out)] if out else [])]
    words += [
        *(["--workers", str(workers)] if workers != 1 else []),
        *(["--threads", str(threads)] if threads != 1 else []),
    ]
    words += [*(["--backend", backend] if backend != "local" else []), *(["--address", address] if address else [])]
    words += ["--device", device] if device else []
    command = " ".join(shlex.quote(w) for w in words)
    with _sigterm_as_interrupt() as received:
        try:
            result = run_grid(
                config,
                out,
                workers=workers,
                threads=threads,
                backend=backend,
                address=address,
                device=device,
                overwrite=overwrite,
                progress=default_grid_progress(),
                command=command,
            )
        except Interrupted as stop:
            _one_line(stop.line())
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
        except (KeyboardInterrupt, Exception) as exc:  # before any cell was finished
            if not by_signal(exc):
                raise
            _one_line(f"interrupted: no cell finished; start again with: {command}")
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
    print(
        f"{result.ran} of {result.cells} cells run now ({result.cells - result.ran - len(result.failed)} kept from "
        f"before), {result.seconds / 60:.1f} min; report: {result.report}"
    )
    if result.failed:
        for f in result.failed:
            _one_line(f"failed: {f['cell']}: {f['error']}")
        _one_line(f"{len(result.failed)} cell(s) failed; run the same command again to retry them")
        # exit 2 when every failure is a user error (bad data, a diverging setting), as `corekd run` exits; 1 for a bug
        raise typer.Exit(2 if all(f.get("user_error") for f in result.failed) else 1)


@app.command()
@_guarded
def tune(
    config: Path = typer.Argument(
        ..., help="A run config or a grid config (YAML); a grid is tuned on its first corpus."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: new or empty, or an earlier tuning with --resume."),
    trials: int | None = typer.Option(
        None, "--trials", help="Trials per method, the same for every method (overrides tune.trials; default 20)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted tuning in --out (same config): finished trials are kept."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start again: an earlier folder at --out is first moved aside to <out>.old-<time>."
    ),
) -> None:
    """Tune every method of CONFIG with the same dev-only budget (docs/tune.md).

    Writes tuning.json (every trial), tuning.md/.html (the report) and tuned.yaml (the config with each method's best
    parameters, for `corekd run` or `corekd compare`) into --out. The test split is never read.
    """
    from corekd.experiments.tune import TuneInterrupted
    from corekd.experiments.tune import tune as run_tuning

    words = ["corekd", "tune", str(config), "--out", str(out), *(["--trials", str(trials)] if trials else [])]
    command = " ".join(shlex.quote(w) for w in words)
    with _sigterm_as_interrupt() as received:
        try:
            result = run_tuning(
                config,
                out,
                trials=trials,
                resume=resume,
                overwrite=overwrite,
                progress=lambda text: err_console.print(text, markup=False, highlight=False, soft_wrap=True),
                command=command,
            )
        except TuneInterrupted as stop:
            _one_line(f"{stop}; continue with: {command} --resume")
            raise typer.Exit(128 + (received[0] if received else signal.SIGINT)) from None
    print(f"tuned config: {result.tuned}; report: {result.report}")


@app.command()
@_guarded
def report(
    run_dir: Path = typer.Argument(
        ..., help="A folder written by `corekd run` or `corekd compare` (holds results.json)."
    ),
) -> None:
    """Rebuild report.md from a run's results.json (a grid: report.md and report.html; a partial run is reported as partial)."""
    from corekd.experiments.report import rebuild_report

    if run_dir.exists() and not run_dir.is_dir():
        raise CorekdError("expected a run folder, got a file", path=run_dir)
    for line in rebuild_report(run_dir):
        print(line)


@data_app.command("synth")
@_guarded
def data_synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the corpus into."),
    seed: int | None = typer.Option(None, "--seed", help="Generator seed (default 0, or the config's)."),
    config: Path | None = typer.Option(
        None, "--config", help="A run config whose data.synth section sets the generator's knobs."
    ),
) -> None:
    """Generate the IEMOCAP-shaped synthetic corpus (deterministic for a given seed and knobs)."""
    from corekd.config import load_config
    from corekd.data.synth import SynthConfig, generate

    refuse_inside_experiment(out)

    synth = load_config(config).data.synth if config else SynthConfig()
    if seed is not None:
        try:
            synth = SynthConfig.model_validate({**synth.model_dump(), "seed": seed})
        except ValidationError as exc:
            raise CorekdError(from_validation_error(exc, None).detail, field="--seed") from None
    if out.exists() and not out.is_dir():
        raise CorekdError("expected a folder, but this is a file", path=out, field="--out")
    corpus = generate(synth)
    corpus.save(out)
    counts = {s: len(corpus.split(s)) for s in ("train", "dev", "test")}
    print(
        f"wrote {out}: {len(corpus.dialogues)} dialogues ({counts['train']}/{counts['dev']}/{counts['test']} "
        f"train/dev/test), {corpus.num_utterances} utterances, seed {synth.seed}"
    )


@data_app.command("inspect")
@_guarded
def data_inspect(
    path: Path = typer.Argument(..., help="A corpus folder (corpus.json + features.safetensors)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    cast: bool = typer.Option(
        False,
        "--cast",
        help="Convert feature tensors that are not float32 to float32 "
        "(and offsets to int64), rewriting features.safetensors, then inspect.",
    ),
) -> None:
    """Counts per split, label distribution, modality dims and dataset cards, and any problem found."""
    from corekd.data.corpus import cast_features, load_corpus
    from corekd.data.summary import summarize

    if cast:
        load_corpus(path, cast=True)  # everything else must be right before the file is rewritten
        changed = cast_features(path)
        print(f"cast {'; '.join(changed)}" if changed else "cast: every tensor already had the expected dtype")
    info = summarize(load_corpus(path))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    out_console.print(f"[bold]{info['name']}[/bold] ({info['task']}), {len(info['labels'])} labels")
    splits = Table("split", "dialogues", "utterances", "utterances per dialogue (min/mean/max)")
    for split, s in info["splits"].items():
        u = s["utterances_per_dialogue"]
        splits.add_row(split, str(s["dialogues"]), str(s["utterances"]), f"{u['min']} / {u['mean']} / {u['max']}")
    out_console.print(splits)
    dist = Table("label", *info["splits"])
    for name in info["labels"]:
        cells = []
        for s in info["splits"].values():
            n = s["labels"][name]
            cells.append(f"{n} ({100 * n / max(s['utterances'], 1):.1f}%)")
        dist.add_row(name, *cells)
    out_console.print(dist)
    mods = Table("modality", "dim", "kind", "missing utterances", "source")
    for m, spec in info["modalities"].items():
        mods.add_row(m, str(spec["dim"]), spec["kind"], str(spec["missing_utterances"]), spec["source"] or "")
    out_console.print(mods)
    for m, spec in info["modalities"].items():
        card = spec["card"]
        out_console.print(
            f"card {m}: extractor {card['extractor']}; {card['frame_rate']}; alignment "
            f"{card['aligned']}; normalization {card['normalization']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if info.get("dev_split"):
        from corekd.data.splits import describe

        out_console.print(describe(info["dev_split"]), markup=False, highlight=False, soft_wrap=True)
    sp = info["speakers_per_dialogue"]
    out_console.print(f"speakers per dialogue: {sp['min']}..{sp['max']}")
    if info["problems"]:
        for problem in info["problems"]:
            out_console.print(f"[yellow]problem:[/yellow] {problem}")
    else:
        out_console.print("problems: none found")


@data_app.command("probe")
@_guarded
def data_probe(
    path: Path = typer.Argument(..., help="A corpus folder."),
    pairs: bool = typer.Option(False, "--pairs", help="Also score every class pair per modality."),
) -> None:
    """Linear probe per modality (utterance level, train -> test): how informative each view is alone."""
    from corekd.data.corpus import load_corpus
    from corekd.data.summary import all_pairs, linear_probe

    corpus = load_corpus(path)
    try:
        result = linear_probe(corpus, pairs=all_pairs(corpus) if pairs else None)
    except CorekdError as exc:
        raise CorekdError(exc.detail, path=path, field=exc.field) from None
    table = Table("features", "test accuracy", "test weighted F1")
    for name, r in result["modalities"].items():
        table.add_row(name, f"{r['accuracy']:.3f}", f"{r['weighted_f1']:.3f}")
    out_console.print(table)
    if pairs:
        ptable = Table("class pair", *corpus.modality_names)
        for pair, accs in result["pairs"].items():
            ptable.add_row(pair, *("n/a" if accs[m] is None else f"{accs[m]:.3f}" for m in corpus.modality_names))
        out_console.print(ptable)


@data_app.command("import")
@_guarded
def data_import(
    fmt: str = typer.Argument(
        ..., metavar="FORMAT", help="jsonl, conversation-pickle, mmsa-pickle or meld (docs/import-*.md)."
    ),
    src: Path | None = typer.Argument(None, help="The source file (meld: the folder, or use --root)."),
    out: Path = typer.Option(..., "--out", help="New or empty folder to write the corpus into."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Label names in index order, e.g. happy,sad,neutral "
        "(jsonl: integer labels index them; conversation-pickle: overrides the "
        "dataset's order).",
    ),
    name: str | None = typer.Option(None, "--name", help="Corpus name (default: the source file's stem)."),
    dev_fraction: float = typer.Option(
        0.1, "--dev-fraction", help="Share of train dialogues carved into dev when the source has no dev split."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the carved dev split."),
    dataset: str | None = typer.Option(
        None, "--dataset", help="conversation-pickle: iemocap or meld (default: from the layout and speaker encoding)."
    ),
    classes: int = typer.Option(
        2,
        "--classes",
        help="mmsa-pickle: 2 (negative/non-negative) or 7 (rounded sentiment) classes from the sentiment score.",
    ),
    task: str = typer.Option(
        "classification",
        "--task",
        help="jsonl, mmsa-pickle: classification (the label is the "
        "target) or regression (the per-utterance sentiment in [-3, 3] is the target).",
    ),
    root: Path | None = typer.Option(None, "--root", help="meld: the folder holding train/dev/test_sent_emo.csv."),
    media: Path | None = typer.Option(
        None,
        "--media",
        help="meld: the folder of MELD's clip folders "
        "(train_splits/, dev_splits_complete/, output_repeated_splits_test/).",
    ),
    target: str = typer.Option("emotion", "--target", help="meld: emotion (7 classes) or sentiment (3 classes)."),
    workers: int = typer.Option(1, "--workers", help="meld with --media: worker processes for audio and video."),
    features_config: Path | None = typer.Option(
        None, "--features-config", help="meld: extractor options (YAML, docs/features.md)."
    ),
) -> None:
    """Convert a feature file of the field (or MELD's official CSVs) into a corpus folder (checked by reading it back)."""
    from corekd.data.importers import FORMATS, import_corpus
    from corekd.data.summary import summarize

    refuse_inside_experiment(out)

    if fmt == "meld":
        from corekd.features.extract import check_out, load_features_config, save_result
        from corekd.features.meld import import_meld

        if root is not None and src is not None:
            raise CorekdError("give the MELD folder once: as SRC or as --root", field="--root")
        folder = root or src
        if folder is None:
            raise CorekdError("meld needs the folder holding train/dev/test_sent_emo.csv", field="--root")
        check_out(out)
        result = import_meld(
            folder,
            target=target,
            media=media,
            config=load_features_config(features_config),
            workers=workers,
            name=name,
            progress=sys.stderr.isatty(),
        )
        corpus = save_result(result, out)
        _print_extraction(out, corpus, result.summary)
        return
    if src is None:
        raise CorekdError(f"{fmt} needs a source file", field="SRC")
    if fmt not in FORMATS:
        raise CorekdError(f"unknown format '{fmt}' (expected one of: {', '.join(FORMATS)})", field="FORMAT")
    if dataset is not None and dataset not in ("iemocap", "meld"):
        raise CorekdError(f"expected iemocap or meld, got '{dataset}'", field="--dataset")
    if task not in ("classification", "regression"):
        raise CorekdError(f"expected classification or regression, got '{task}'", field="--task")
    if not 0 < dev_fraction < 1:
        raise CorekdError(f"expected a fraction in (0, 1), got {dev_fraction}", field="--dev-fraction")
    names = [n.strip() for n in labels.split(",")] if labels else None
    if names is not None and (len(names) < 2 or not all(names)):
        raise CorekdError(f"expected at least two comma-separated names, got '{labels}'", field="--labels")
    result = import_corpus(
        fmt,
        src,
        out,
        labels=names,
        name=name,
        dev_fraction=dev_fraction,
        seed=seed,
        dataset=dataset,
        classes=classes,
        task=task,
    )
    corpus = result.corpus
    counts = {s: (len(corpus.split(s)), sum(len(d) for d in corpus.split(s))) for s in ("train", "dev", "test")}
    print(
        f"wrote {out}: {len(corpus.dialogues)} dialogues, {corpus.num_utterances} utterances "
        f"(train/dev/test dialogues {counts['train'][0]}/{counts['dev'][0]}/{counts['test'][0]}), "
        f"labels {', '.join(corpus.labels)}"
        + (", target: sentiment (regression)" if corpus.task == "regression" else "")
    )
    for m, card in corpus.cards().items():
        print(f"modality {m}: {card['kind']}, dim {card['dim']}, {card['frame_rate']}")
    for note in result.notes:
        print(f"note: {note}")
    for problem in summarize(corpus)["problems"]:
        print(f"problem: {problem}")


def _extraction_lines(summary: dict) -> list[str]:
    """What an extraction did (jobs, cache, every failure, every utterance without a face), one line each."""
    return [
        f"extraction: {summary['jobs']} jobs, {summary['computed']} computed, {summary['cache_hits']} from the cache "
        f"({summary['cache_dir'] or 'cache off'}), {summary['seconds']:.1f} s, {summary['workers']} worker(s)",
        *(f"failed: {f['utterance']} ({f['modality']}): {f['reason']}" for f in summary["failures"]),
        *(
            f"no face: {f['utterance']}: no face in {f['frames']} sampled frame(s); visual marked missing"
            for f in summary["no_face"]
        ),
    ]


def _print_extraction(out: Path, corpus, summary: dict) -> None:
    counts = {s: (len(corpus.split(s)), sum(len(d) for d in corpus.split(s))) for s in ("train", "dev", "test")}
    print(
        f"wrote {out}: {len(corpus.dialogues)} dialogues, {corpus.num_utterances} utterances "
        f"(train/dev/test utterances {counts['train'][1]}/{counts['dev'][1]}/{counts['test'][1]}), "
        f"labels {', '.join(corpus.labels)}"
    )
    for m, card in corpus.cards().items():
        missing = sum(int((~d.available[:, corpus.modality_names.index(m)]).sum()) for d in corpus.dialogues)
        print(
            f"modality {m}: {card['kind']}, dim {card['dim']}, {card['frame_rate']}, missing in {missing} "
            f"utterances; {card['extractor']}"
        )
    for line in _extraction_lines(summary):
        print(line)
    for f in summary["dropped"]:
        print(f"dropped: {f.get('utterance') or f['dialogue']}: {f['reason']}")
    print(
        f"summary: {len(summary['failures'])} failure(s), {len(summary['no_face'])} utterance(s) without a face, "
        f"{len(summary['dropped'])} dropped (details in {out / 'extraction.json'})"
    )


@features_app.command("extract")
@_guarded
def features_extract(
    manifest: Path = typer.Argument(
        ...,
        help="CSV: dialogue_id, utterance_id, speaker, label, split, text, audio_path, "
        "video_path (empty = modality missing; extra columns kept).",
    ),
    out: Path = typer.Option(..., "--out", help="New or empty folder to write the corpus into."),
    workers: int = typer.Option(1, "--workers", help="Worker processes for audio and video."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first missing or undecodable file."),
    config: Path | None = typer.Option(None, "--config", help="Extractor options (YAML, docs/features.md)."),
    labels: str | None = typer.Option(None, "--labels", help="Label names in order (default: sorted)."),
    name: str | None = typer.Option(None, "--name", help="Corpus name (default: the manifest's stem)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Compute everything again (and store nothing)."),
) -> None:
    """Extract text, audio and visual features from a manifest into a corpus folder `corekd run` trains on."""
    from corekd.features.extract import extract_manifest, load_features_config

    refuse_inside_experiment(out)

    cfg = load_features_config(config)
    if no_cache:
        cfg = cfg.model_copy(update={"cache": False})
    names = [n.strip() for n in labels.split(",")] if labels else None
    result = extract_manifest(
        manifest, out, cfg, workers=workers, strict=strict, labels=names, name=name, progress=sys.stderr.isatty()
    )
    _print_extraction(out, result.corpus, result.summary)


@config_app.command("check")
@_guarded
def config_check(config: Path = typer.Argument(..., help="A run config (YAML).")) -> None:
    """Validate a config and its corpus (methods against the corpus included) without training anything."""
    from corekd.config import load_config
    from corekd.experiments.setup import corpus_notes, load_data

    cfg = load_config(config)
    corpus = load_data(cfg, config)
    counts = "/".join(str(len(corpus.split(s))) for s in ("train", "dev", "test"))
    where = cfg.data.path if cfg.data.source in ("corpus", "meld") else "synthetic (data.synth)"
    print(
        f"config {config}: ok ({len(cfg.methods)} methods: {', '.join(s.label for s in cfg.methods)}; "
        f"seeds {cfg.seeds})"
    )
    print(
        f"corpus '{corpus.name}' from {where}: ok, {len(corpus.dialogues)} dialogues ({counts} train/dev/test), "
        f"{corpus.num_utterances} utterances, modalities {', '.join(corpus.modality_names)}"
    )
    for note in corpus_notes(corpus, cfg) + corpus.problems():
        print(f"warning: {note}")


@app.command("export-bundle")
@_guarded
def export_bundle_cmd(
    run_dir: Path = typer.Argument(..., help="A folder written by `corekd run`."),
    method: str = typer.Option(
        ..., "--method", help="The model to bundle: a method's name (label) in the run, e.g. corekd."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Which seed's model (default: the run's first seed)."),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="An ensemble bundle instead: 'all' (every finished seed) or a comma list (0,2); not with --seed.",
    ),
    out: Path = typer.Option(..., "--out", help="New or empty folder to write the bundle into."),
) -> None:
    """Save one trained model of a run as a bundle folder: weights + model.json (labels, dims, cards, statistics);
    with --seeds, several seeds' models as one ensemble bundle (docs/serving.md, "Ensemble bundles")."""
    from corekd.serving.bundle import export_bundle, export_ensemble_bundle, read_bundle

    if seeds is not None and seed is not None:
        raise CorekdError(
            "give --seed S (one model) or --seeds all|S,S (an ensemble bundle), not both", field="--seed/--seeds"
        )
    chosen = None if seeds is None or seeds.strip().lower() == "all" else parse_seeds([seeds], "all or ")
    refuse_inside_experiment(out)

    if seeds is not None:
        path = export_ensemble_bundle(run_dir, method, out, chosen)
    else:
        path = export_bundle(run_dir, method, out, seed)
    b = read_bundle(path)
    dims = ", ".join(f"{m} {s['dim']}" for m, s in b.modalities.items())
    which = (
        f"ensemble of {len(b.members)} (seeds {', '.join(map(str, b.seeds))})"
        if b.is_ensemble
        else f"seed {b.meta['source']['seed']}"
    )
    print(
        f"wrote {path}: {b.meta['source']['variant']} {which}, {b.task}, "
        f"{len(b.labels) if b.task == 'classification' else 1} outputs, modalities {dims}"
    )


@app.command("predict")
@_guarded
def predict_cmd(
    model: Path = typer.Argument(..., help="A bundle folder (`corekd export-bundle`)."),
    input_path: Path = typer.Argument(
        ...,
        metavar="INPUT",
        help="A corpus folder, a jsonl file (docs/import-jsonl.md) "
        "or a media manifest CSV (docs/features.md; label and split optional).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the JSONL here (default: standard output)."),
    runtime: str = typer.Option(
        "torch", "--runtime", help="torch or onnx (the bundle's model.onnx, else an export made for this call)."
    ),
    device: str = typer.Option("cpu", "--device", help="torch runtime: auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, "--batch-size", help="Dialogues per forward (and held in memory at once)."),
    workers: int = typer.Option(1, "--workers", help="Media manifest: worker processes for audio and video."),
    strict: bool = typer.Option(
        False, "--strict", help="Media manifest: stop at the first missing or undecodable file."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Media manifest: extract everything again (store nothing)."
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Media manifest: feature cache folder (default "
        "$COREKD_CACHE, else ~/.cache/corekd/features, as `features extract`).",
    ),
    split: list[str] | None = typer.Option(
        None,
        "--split",
        help="Corpus folder: only this split (repeat it, or a comma list: --split dev,test); default every split.",
    ),
) -> None:
    """Predict every utterance of INPUT; one JSON line per utterance (ids, prediction, probabilities, modalities used;
    for a corpus folder, the dialogue's split)."""
    from corekd.serving.inputs import open_input, predict_stream
    from corekd.serving.predictor import load

    if out is not None:
        refuse_inside_experiment(out)

    if runtime not in ("torch", "onnx"):
        raise CorekdError(f"expected torch or onnx, got '{runtime}'", field="--runtime")
    if batch_size < 1:
        raise CorekdError(f"expected a positive number, got {batch_size}", field="--batch-size")
    splits = [s.strip() for item in split or [] for s in item.split(",")]
    if any(not s for s in splits):
        raise CorekdError(f"expected split names (e.g. --split test or --split dev,test), got {split}", field="--split")
    predictor = load(model, device=device, runtime=runtime)
    show = err_console.is_terminal
    reader = open_input(
        input_path,
        predictor,
        workers=workers,
        strict=strict,
        cache=not no_cache,
        cache_dir=cache_dir,
        progress=show,
        splits=splits or None,
    )
    media = getattr(reader, "shows_progress", False)  # a manifest shows its own bar (the extraction's)
    total = len(reader)
    sink = out.open("w", encoding="utf-8") if out is not None else sys.stdout
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("dialogues"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show or media,
    )
    try:
        with progress:
            task = progress.add_task("predict", total=total)
            done = [0]

            def advance(n: int) -> None:
                done[0] += n
                progress.advance(task, n)
                if not show and (done[0] == total or done[0] % 500 < n):
                    _one_line(f"predicted {done[0]}/{total} dialogues")

            def write_row(row: dict) -> None:
                sink.write(json.dumps(row) + "\n")

            dialogues, utterances = predict_stream(
                predictor, reader, write_row, batch_size=batch_size, on_dialogues=advance
            )
    finally:
        if out is not None:
            sink.close()
    if media:
        _print_media_summary(reader.summary, out)
    _one_line(
        f"predicted {utterances} utterances of {dialogues} dialogues with {predictor.runtime.name}"
        + (f" -> {out}" if out is not None else "")
    )


def _print_media_summary(summary: dict, out: Path | None) -> None:
    """A manifest's extraction, reported as `corekd features extract` reports it (to stderr: stdout may be the JSONL)."""
    for line in _extraction_lines(summary):
        _one_line(line)
    for f in summary["skipped"]:
        _one_line(f"not predicted: {f['utterance']}: {f['reason']}")
    details = ""
    if out is not None:
        path = out.with_name(out.name + ".extraction.json")
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        details = f" (details in {path})"
    _one_line(
        f"summary: {len(summary['failures'])} failure(s), {len(summary['no_face'])} utterance(s) without a face, "
        f"{len(summary['skipped'])} not predicted{details}"
    )


@app.command("serve")
@_guarded
def serve_cmd(
    model: Path = typer.Argument(..., help="A bundle folder (`corekd export-bundle`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", help="Server processes, each with its own copy of the model."),
    runtime: str = typer.Option("torch", "--runtime", help="torch or onnx."),
    device: str = typer.Option("cpu", "--device", help="torch runtime: auto, cpu, cuda or cuda:N."),
    max_body_bytes: int = typer.Option(16 * 2**20, "--max-body-bytes", help="Larger request bodies get 413."),
    max_dialogues: int = typer.Option(64, "--max-dialogues", help="Most dialogues in one request."),
    batching: bool = typer.Option(False, "--batching", help="Gather concurrent requests into one forward."),
    max_batch: int = typer.Option(32, "--max-batch", help="--batching: most dialogues in one forward."),
    batch_wait_ms: float = typer.Option(
        5.0, "--batch-wait-ms", help="--batching: how long the first request waits for others."
    ),
    timeout_keep_alive: float = typer.Option(
        5.0,
        "--timeout-keep-alive",
        help="Seconds an idle keep-alive connection is kept open (then the server closes it).",
    ),
    parse_workers: int = typer.Option(
        -1,
        "--parse-workers",
        help="Processes that parse large request bodies, off "
        "the server's event loop (-1: min(2, CPUs); 0: parse in threads only).",
    ),
) -> None:
    """Serve the model over HTTP: POST /v1/predict, GET /v1/model, GET /healthz, OpenAPI docs at /docs."""
    import os

    import uvicorn

    from corekd.serving.app import SETTINGS_ENV
    from corekd.serving.predictor import load

    if runtime not in ("torch", "onnx"):
        raise CorekdError(f"expected torch or onnx, got '{runtime}'", field="--runtime")
    for name, value in (
        ("--workers", workers),
        ("--max-body-bytes", max_body_bytes),
        ("--max-dialogues", max_dialogues),
        ("--max-batch", max_batch),
    ):
        if value < 1:
            raise CorekdError(f"expected a positive number, got {value}", field=name)
    if not 0 < port < 65536:
        raise CorekdError(f"expected a port in 1..65535, got {port}", field="--port")
    if not timeout_keep_alive > 0:
        raise CorekdError(
            f"expected a positive number of seconds, got {timeout_keep_alive}", field="--timeout-keep-alive"
        )
    if parse_workers < -1:
        raise CorekdError(
            f"expected -1 (automatic), 0 or a positive number, got {parse_workers}", field="--parse-workers"
        )
    from corekd.serving.app import DEFAULT_PARSE_WORKERS

    load(model, device=device, runtime=runtime)  # fail here, with one line, before any worker starts
    os.environ[SETTINGS_ENV] = json.dumps(
        {
            "model": str(model.resolve()),
            "device": device,
            "runtime": runtime,
            "max_body_bytes": max_body_bytes,
            "max_dialogues": max_dialogues,
            "batching": batching,
            "max_batch": max_batch,
            "batch_wait_ms": batch_wait_ms,
            "parse_workers": DEFAULT_PARSE_WORKERS if parse_workers == -1 else parse_workers,
        }
    )
    _one_line(f"serving {model} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "corekd.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_keep_alive=timeout_keep_alive,  # type: ignore[arg-type]  # uvicorn annotates int, sleeps a float
    )


@app.command("export")
@_guarded
def export_cmd(
    model: Path = typer.Argument(..., help="A bundle folder (`corekd export-bundle`)."),
    out: Path = typer.Option(..., "--out", help="The ONNX file to write (a sidecar OUT.json describes its inputs)."),
) -> None:
    """Export the bundle's model to ONNX: dynamic dialogues and utterances, the modality mask as an input."""
    from corekd.serving.bundle import read_bundle
    from corekd.serving.onnx_export import OPSET, export_onnx, sidecar_path

    refuse_inside_experiment(out)

    path = export_onnx(read_bundle(model), out)
    print(f"wrote {path} (opset {OPSET}) and {sidecar_path(path)}")


def main() -> None:
    if "--debug" in sys.argv[1:]:
        _state["debug"] = True
        sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != "--debug"]
    app()


if __name__ == "__main__":
    main()
