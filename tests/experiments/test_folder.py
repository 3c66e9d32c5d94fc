"""The one output folder's promises, where they used to break: creation is atomic, one writer at a time, a
finished folder is not rewritten, a signal at any phase leaves a true status, a full disk is one line, writing
commands refuse experiment folders, and workers die with their driver."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from corekd.config import validate_config
from corekd.errors import CorekdError
from corekd.experiments import Interrupted, run
from corekd.experiments import engine as engine_mod
from corekd.experiments.folder import (
    RUN,
    ExperimentFolder,
    FolderLock,
    enclosing_experiment,
    refuse_inside_experiment,
)
from corekd.files import atomic_write
from helpers import quick_config


def _cfg(**extra):
    return validate_config(quick_config(**extra))


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".corekd.lock"
    }


def test_a_failed_creation_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real = atomic_write

    def dies_on_marker(target, write):  # a kill (or a full disk) between the config and the marker
        calls["n"] += 1
        if Path(target).name == RUN.marker:
            raise KeyboardInterrupt
        return real(target, write)

    monkeypatch.setattr("corekd.experiments.folder.atomic_write", dies_on_marker)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(), out)
    assert calls["n"] >= 2
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no hidden half-built sibling either
    monkeypatch.undo()
    result = run(_cfg(), out)  # the same command then starts cleanly
    assert result.records


@pytest.mark.parametrize("flag", ["resume", "overwrite"])
def test_a_folder_an_older_version_left_half_created_is_accepted_by_resume_and_overwrite(tmp_path, flag):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: quick\n")  # config written, killed before the marker
    with pytest.raises(CorekdError, match="not a corekd run"):
        run(_cfg(), out)
    result = run(_cfg(), out, **{flag: True})
    assert result.records and (out / RUN.marker).is_file()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    run(_cfg(), out)
    holder = FolderLock(out, "corekd run held-by-test").acquire()
    try:
        with pytest.raises(CorekdError, match=rf"another corekd process is writing to this folder: pid {os.getpid()}"):
            run(_cfg(training={"epochs": 2, "patience": 1, "batch_size": 4}), out, overwrite=True)
    finally:
        holder.release()


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = run(_cfg(methods=[{"name": "teacher"}, {"name": "no_kd"}]), out)
    before = _snapshot(out)
    again = run(_cfg(methods=[{"name": "teacher"}, {"name": "no_kd"}]), out, resume=True)
    assert _snapshot(out) == before  # not one byte or timestamp
    assert again.records == first.records


def test_a_signal_while_the_report_is_written_leaves_a_true_status_and_resume_finishes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = engine_mod.write_report
    state = {"n": 0}

    def interrupted_once(*args, **kwargs):
        state["n"] += 1
        if state["n"] == 1:
            raise KeyboardInterrupt  # SIGTERM after the last model, while the report is written
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "write_report", interrupted_once)
    with pytest.raises(Interrupted) as stop:
        run(_cfg(), out)
    assert stop.value.line().startswith("interrupted: kept 1 finished model(s) of 1")
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["status"] == "interrupted" and results["records"]
    assert (out / "report.md").is_file()  # written on the way out, with the status it has
    resumed = run(_cfg(), out, resume=True)
    assert json.loads((out / "results.json").read_text())["meta"]["status"] == "complete"
    assert resumed.records == results["records"]


def test_signals_are_recorded_not_raised_while_an_interrupted_experiment_writes():
    with engine_mod.signals_deferred() as received:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
    assert received == [signal.SIGTERM, signal.SIGINT]


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def no_space(path):
        Path(path).write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CorekdError) as err:
        atomic_write(target, no_space)
    assert str(target) in str(err.value) and "No space left on device" in str(err.value)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_paths_inside_an_experiment_folder_are_refused(tmp_path):
    out = tmp_path / "run"
    run(_cfg(), out)
    assert enclosing_experiment(out / "checkpoints" / "x.jsonl") == out.resolve()
    for path in (out / "results.json", out / "report.md", out / "sub" / "corpus"):
        with pytest.raises(CorekdError, match="inside the corekd experiment folder"):
            refuse_inside_experiment(path)
    refuse_inside_experiment(tmp_path / "elsewhere")  # outside: fine
    with pytest.raises(CorekdError, match="inside the corekd experiment folder"):
        ExperimentFolder.check(out / "nested", RUN, {}, mode="run")


def test_writing_commands_refuse_a_run_folder(tmp_path):
    from typer.testing import CliRunner

    from corekd.cli import app

    out = tmp_path / "run"
    run(_cfg(), out)
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out / "corpus")])
    assert result.exit_code == 2
    assert "inside the corekd experiment folder" in result.output
    assert not (out / "corpus").exists()


@pytest.mark.subprocess
def test_local_workers_die_with_their_driver(tmp_path):
    driver = textwrap.dedent("""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from corekd.experiments.runner import _init_worker

        if __name__ == "__main__":
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(1, os.getpid()))
            pid = pool.submit(os.getpid).result()
            print(pid, flush=True)
            pool.submit(time.sleep, 120)
            time.sleep(120)
    """)
    script = tmp_path / "driver.py"
    script.write_text(driver)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)  # as the OOM killer does
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):  # dead, waiting to be reaped by whoever adopted it
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its driver by 10 s")


def test_report_warns_when_analyses_lack_a_reported_model(tmp_path):
    from corekd.experiments.report import rebuild_report

    out = tmp_path / "run"
    run(_cfg(methods=[{"name": "teacher"}, {"name": "no_kd"}]), out)
    assert [line for line in rebuild_report(out) if line.startswith("warning")] == []
    payload = json.loads((out / "analyses.json").read_text())
    for key in ("drift", "rejection"):  # as a killed writer of an older corekd could leave it
        payload[key] = [r for r in payload[key] if r["variant"] != "no_kd"]
    (out / "analyses.json").write_text(json.dumps(payload))
    lines = rebuild_report(out)
    assert (
        lines[0].startswith("warning: analyses.json has no mechanism analyses for 1 model(s)")
        and "no_kd seed 0" in lines[0]
    )
    assert lines[-1] == f"report: {out / 'report.md'}"
