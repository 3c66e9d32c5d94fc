"""The grid report (corekd.reporting.grid): the pure statistics by hand, and a grid folder built from one real tiny
run (the same records under two corpus keys) reported to Markdown and self-contained HTML."""

import html
import json
import math
import re
import shutil

import numpy as np
import pytest

from corekd.config import RunConfig
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.reporting.blocks import render_markdown
from corekd.reporting.grid import (
    build_blocks,
    is_grid_folder,
    read_grid,
    write_grid_report,
)
from corekd.reporting.stats import curve_auc, format_p, holm, paired_difference
from corekd.reporting.tables import FIXED_ORDER
from helpers import quick_config

VARIANTS = ["teacher", "no_kd", "vanilla_kd", "corekd"]
SEEDS = [0, 1, 2]
PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ pure pieces, by hand
def test_curve_auc_by_hand():
    # sorted: (0, .8), (.2, .6), (.5, .4): trapezoids .2 * 1.4 / 2 = .14 and .3 * 1.0 / 2 = .15; / span .5 -> .58
    assert curve_auc([0.0, 0.5, 0.2], [0.8, 0.4, 0.6]) == pytest.approx(0.58)
    assert curve_auc([0.1, 0.7], [0.3, 0.3]) == pytest.approx(0.3)  # a flat curve reads as its score
    with pytest.raises(ValueError):
        curve_auc([0.5], [0.4])
    with pytest.raises(ValueError):
        curve_auc([0.0, 0.0], [0.4, 0.5])


def test_paired_difference_by_hand():
    ref = {0: 0.5, 1: 0.6, 2: 0.7}
    other = {0: 0.4, 1: 0.55, 2: 0.5, 3: 0.9}  # seed 3 has no pair: left out
    # differences .1, .05, .2: mean 7/60; deviations -1/60, -4/60, 5/60 -> sample variance (1+16+25)/3600/2 = 7/1200
    # t^2 = mean^2 * n / var = (49/3600) * 3 * (1200/7) = 7; with 2 degrees of freedom the two-sided p is
    # 1 - t / sqrt(t^2 + 2) = 1 - sqrt(7)/3
    out = paired_difference(ref, other)
    assert out.n == 3
    assert out.mean == pytest.approx(7 / 60)
    assert out.std == pytest.approx(math.sqrt(7 / 1200))
    assert out.p == pytest.approx(1 - math.sqrt(7) / 3)
    one = paired_difference({0: 0.5}, {0: 0.4})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and one.std is None and one.p is None
    flat = paired_difference({0: 1.0, 1: 0.9}, {0: 1.1, 1: 1.0})  # -.1 twice, up to float rounding: no t statistic
    assert flat.std == pytest.approx(0.0, abs=1e-15) and flat.p is None
    assert paired_difference({0: 0.5}, {1: 0.4}) is None  # no common seed
    assert format_p(None) == "–" and format_p(0.1181) == "0.118" and format_p(0.0002) == "2.0e-04"


def test_holm_by_hand():
    # sorted .01, .03, .04 (m = 3): 3 * .01 = .03; 2 * .03 = .06; 1 * .04 = .04 -> kept monotone at .06
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert holm([0.6, 0.9]) == [1.0, 1.0]


# ------------------------------------------------------------------ a grid from a real tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid-run") / "run"
    cfg = quick_config(
        methods=[{"name": v} for v in VARIANTS],
        seeds=SEEDS,
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False},
    )
    run(RunConfig.model_validate(cfg), out)
    return out


def make_grid(run_dir, out, *, reference="corekd", analyses=True, keys=("a", "b")):
    """The run's records as a grid under corpus keys ``a`` (as run) and ``b`` (in reverse order, without corekd's
    seed 2: a partial cell)."""
    res = json.loads((run_dir / "results.json").read_text())
    meta = res["meta"]
    info = {
        "corpus": meta["corpus"],
        "task": meta["task"],
        "labels": meta["labels"],
        "modalities": meta["modalities"],
        "splits": meta["splits"],
        "select_metric": "weighted_f1",
        "mask_seed": meta["mask_seed"],
        "random_scheme": meta["random_scheme"],
        "warnings": meta["warnings"],
    }
    records_b = [r for r in reversed(res["records"]) if not (r["variant"] == "corekd" and r["seed"] == 2)]
    grid = {
        "format": "corekd-grid",
        "version": 1,
        "meta": {
            "name": "tiny-grid",
            "command": "corekd compare grid.yaml --out grid",
            "seeds": SEEDS,
            "variants": [{"variant": v, "method": v} for v in VARIANTS],
            "reference": reference,
            "corpora": {k: info for k in keys},
            "cells": {"total": 24, "done": 23},
            "status": "partial",
            "seconds": 3.0,
            "workers": 2,
            "backend": "local",
        },
        "records": [{**r, "corpus": k} for k in keys for r in (res["records"] if k == "a" else records_b)],
        "trainings": [{**t, "corpus": k} for k in keys for t in res["trainings"]],
    }
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(grid))
    if analyses:
        payload = json.loads((run_dir / "analyses.json").read_text())
        (out / "analyses.json").write_text(
            json.dumps(
                {
                    "format": "corekd-grid-analyses",
                    "version": 1,
                    "corpora": {k: payload for k in keys},
                    "embeddings": {},
                    "figures": [],
                }
            )
        )
    return out


@pytest.fixture(scope="module")
def grid_report(tiny_run, tmp_path_factory):
    out = make_grid(tiny_run, tmp_path_factory.mktemp("grid") / "grid")
    md_path, html_path = write_grid_report(out)
    return out, md_path.read_text(), html_path.read_text()


def md_table_after(text: str, heading: str, start: int = 0) -> list[list[str]]:
    """The cells of the first Markdown table after the line ``heading`` (searched from ``start``)."""
    lines = text[text.index(heading + "\n", start) :].split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        if not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def md_cells(text: str) -> list[str]:
    return [
        c.strip().replace("\\\\", "\\")
        for line in text.split("\n")
        if line.startswith("|") and not line.startswith("|---")
        for c in line.strip().strip("|").split(" | ")
    ]


def test_test_tables_match_the_run_report(tiny_run, grid_report):
    out, text, _ = grid_report
    run_md = (tiny_run / "report.md").read_text()
    section_a = text.index("## Corpus `a`")
    for title in ("weighted F1", "accuracy"):
        mine = md_table_after(text, f"### Test, fixed missing modalities ({title})", section_a)
        theirs = md_table_after(run_md, f"## Fixed missing modalities ({title})")
        assert mine == theirs and [row[0] for row in mine[1:]] == VARIANTS
        assert all("±" in cell for row in mine[1:] for cell in row[1:])  # 3 seeds: every cell has a spread
        mine = md_table_after(text, f"### Test, random missing at rate p ({title})", section_a)
        assert mine == md_table_after(run_md, f"## Random missing, rate p ({title})")
    # key b: records in reverse order, corekd without seed 2: rows still in config order, corekd says (n=2)
    section_b = text.index("## Corpus `b`")
    table_b = md_table_after(text, "### Test, fixed missing modalities (weighted F1)", section_b)
    assert [row[0] for row in table_b[1:]] == VARIANTS
    assert all(cell.endswith("(n=2)") for cell in table_b[4][1:]) and "(n=" not in " ".join(table_b[1])


def _fixed_avg(records, variant, seed):
    values = [
        r["weighted_f1"]
        for r in records
        if r["variant"] == variant and r["seed"] == seed and r["split"] == "test" and r["condition"] in FIXED_ORDER
    ]
    assert len(values) == 6
    return float(np.mean(values))


def test_paired_comparison_and_auc_numbers(tiny_run, grid_report):
    out, text, _ = grid_report
    records = json.loads((tiny_run / "results.json").read_text())["records"]
    section_a = text.index("## Corpus `a`")
    table = md_table_after(text, "fixed Avg weighted F1:", section_a)
    assert table[0][0] == "corekd vs" and [row[0] for row in table[1:]] == ["teacher (teacher)", "no_kd", "vanilla_kd"]
    ref = {s: _fixed_avg(records, "corekd", s) for s in SEEDS}
    for row in table[1:]:
        other = {s: _fixed_avg(records, row[0].split(" ")[0], s) for s in SEEDS}
        res = paired_difference(ref, other)
        assert row[1:4] == [f"{100 * res.mean:.2f} ± {100 * res.std:.2f}", "3", format_p(res.p)]
        assert res.p is not None
    # AUC of the teacher, seed by seed from its random records, then mean ± std
    rates = [0.0, 0.5]
    aucs = [
        curve_auc(
            rates,
            [
                next(
                    r["weighted_f1"]
                    for r in records
                    if r["variant"] == "teacher"
                    and r["seed"] == s
                    and r["split"] == "test"
                    and r["condition"] == f"random:{p}"
                )
                for p in rates
            ],
        )
        for s in SEEDS
    ]
    auc_table = md_table_after(text, "### Area under the missing-rate curve (weighted F1)", section_a)
    assert auc_table[1] == ["teacher", f"{100 * np.mean(aucs):.2f} ± {100 * np.std(aucs, ddof=1):.2f}"]
    # key b: corekd has two seeds, so the comparisons there pair two
    table_b = md_table_after(text, "fixed Avg weighted F1:", text.index("## Corpus `b`"))
    assert {row[2] for row in table_b[1:]} == {"2"}


def test_html_is_self_contained_and_holds_the_same_numbers(grid_report):
    out, text, page = grid_report
    assert 'src="figures' not in page and "<script" not in page and "<link" not in page and "http" not in page
    images = re.findall(r"<img [^>]*>", page)
    assert images and all('src="data:image/png;base64,' in img for img in images)
    html_cells = [html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", page)]
    assert html_cells == md_cells(text)
    assert text.count("![") == len(images)


def test_figures_exist_and_are_listed(grid_report):
    out, text, _ = grid_report
    listed = json.loads((out / "analyses.json").read_text())["figures"]
    expected = [
        f"figures/{k}/{name}.png" for k in ("a", "b") for name in ("score_vs_missing_rate", "drift", "rejection")
    ]
    assert listed == expected
    for fig in listed:
        assert (out / fig).read_bytes()[:8] == PNG
        assert f"]({fig})" in text


def test_rebuild_gives_the_same_report(grid_report):
    out, text, _ = grid_report
    md_path, _ = write_grid_report(out)
    assert md_path.read_text() == text


def test_mechanism_analyses_match_the_run_report(tiny_run, grid_report):
    out, text, _ = grid_report
    run_md = (tiny_run / "report.md").read_text()
    section_a = text.index("## Corpus `a`")
    mine = md_table_after(text, "### Mechanism analyses", section_a)
    theirs = md_table_after(run_md, "### State drift to the teacher's complete-view state")
    assert mine[0][0] == theirs[0][0] == "normalised"
    theirs_by = {row[0]: dict(zip(theirs[0][1:], row[1:])) for row in theirs[1:]}
    for row in mine[1:]:  # same numbers, columns in canonical condition order
        assert dict(zip(mine[0][1:], row[1:])) == theirs_by[row[0]]
    rejection = md_table_after(run_md, "### Conflict rejection rate")
    assert md_table_after(text, "per swapped modality type:", section_a) == rejection


def test_is_grid_folder(tiny_run, grid_report):
    assert is_grid_folder(grid_report[0])
    assert not is_grid_folder(tiny_run)  # a `corekd run` folder
    assert not is_grid_folder(tiny_run / "nowhere")


def test_without_analyses_and_without_reference(tiny_run, tmp_path):
    out = make_grid(tiny_run, tmp_path / "g", reference=None, analyses=False)
    text = render_markdown(build_blocks(read_grid(out)))
    assert "No analyses.json in this folder" in text and "### Mechanism analyses" not in text
    assert text.count("`meta.reference` is null): no paired comparison") == 2
    out2 = make_grid(tiny_run, tmp_path / "g2", reference="corrkd")
    assert "The reference `corrkd` has no test records for this corpus" in render_markdown(
        build_blocks(read_grid(out2))
    )


def test_malformed_results_are_named(tiny_run, tmp_path):
    out = make_grid(tiny_run, tmp_path / "g")
    (out / "results.json").write_text("{")
    with pytest.raises(CorekdError) as err:
        write_grid_report(out)
    assert "results.json" in str(err.value) and not (out / "report.md").exists()
    grid = json.loads(
        json.dumps(
            {
                "format": "corekd-grid",
                "version": 1,
                "meta": {"corpora": {"a": {}}},
                "records": [{"variant": "x", "method": "x", "seed": 0, "condition": "complete"}],
            }
        )
    )
    (out / "results.json").write_text(json.dumps(grid))
    with pytest.raises(CorekdError) as err:
        read_grid(out)
    assert "results.json" in str(err.value) and err.value.field == "records[0].corpus"
    grid["records"][0]["corpus"] = "a"
    (out / "results.json").write_text(json.dumps(grid))
    with pytest.raises(CorekdError) as err:  # an applicable record without its score
        read_grid(out)
    assert err.value.field == "records[0].weighted_f1"
    (out / "results.json").write_text(json.dumps({"meta": {}, "records": []}))  # a run's results.json
    with pytest.raises(CorekdError) as err:
        read_grid(out)
    assert err.value.field == "format"
    shutil.rmtree(out)
    out = make_grid(tiny_run, tmp_path / "g3")
    (out / "analyses.json").write_text(
        json.dumps({"format": "corekd-grid-analyses", "corpora": {"a": {"drift": [{}]}}})
    )
    with pytest.raises(CorekdError) as err:
        read_grid(out)
    assert "analyses.json" in str(err.value) and err.value.field == "corpora.a.drift[0]"


def test_tsne_panels_from_embedding_files(tiny_run, tmp_path):
    out = make_grid(tiny_run, tmp_path / "g", keys=("a",))
    rng = np.random.default_rng(0)
    cell = out / "cells" / "a" / "seed-0"
    for variant in ("teacher", "corekd"):
        (cell / variant).mkdir(parents=True)
        np.savez(
            cell / variant / "embedding.npz",
            fused=rng.normal(size=(12, 8)).astype(np.float32),
            target=rng.integers(0, 3, size=12),
        )
    analyses = json.loads((out / "analyses.json").read_text())
    analyses["embeddings"] = {"a": {v: f"cells/a/seed-0/{v}/embedding.npz" for v in ("teacher", "no_kd", "corekd")}}
    (out / "analyses.json").write_text(json.dumps(analyses))
    md_path, html_path = write_grid_report(out)
    text = md_path.read_text()
    assert (out / "figures/a/tsne_random0.5.png").read_bytes()[:8] == PNG
    assert "figures/a/tsne_random0.5.png" in json.loads((out / "analyses.json").read_text())["figures"]
    assert "t-SNE panel of `no_kd` skipped: cells/a/seed-0/no_kd/embedding.npz is missing" in text
    np.savez(cell / "corekd" / "embedding.npz", fused=np.zeros((12, 8)), target=np.zeros(3))
    with pytest.raises(CorekdError) as err:
        write_grid_report(out)
    assert "embedding.npz" in str(err.value)


def _regression_record(variant, seed, condition, mae, applicable=True):
    base = {
        "method": "corekd" if variant != "teacher" else "teacher",
        "variant": variant,
        "seed": seed,
        "split": "test",
        "condition": condition,
        "corpus": "sent",
        "n_utterances": 10,
        "missing_rate": float(condition.split(":")[1]) if condition.startswith("random:") else 0.0,
    }
    if not applicable:
        return {**base, "applicable": False, "reason": "the student sees only l"}
    return {**base, "mae": mae, "corr": 0.5, "acc2": 0.6}


def test_regression_grid_by_hand(tmp_path):
    """A hand-made regression grid: MAE tables as they are, AUC and the paired test on MAE, an n/a cell."""
    maes = {
        ("corekd", 0): (1.0, 1.0, 1.4),
        ("corekd", 1): (0.9, 0.9, 1.5),  # complete, random:0.0, random:0.5
        ("teacher", 0): (1.2, 1.2, 1.8),
        ("teacher", 1): (1.0, 1.0, 1.6),
        ("restricted", 0): (1.1, 1.1, None),
        ("restricted", 1): (1.0, 1.0, None),
    }
    records = [
        _regression_record(v, s, c, m, m is not None)
        for (v, s), values in maes.items()
        for c, m in zip(("complete", "random:0.0", "random:0.5"), values)
    ]
    grid = {
        "format": "corekd-grid",
        "version": 1,
        "meta": {
            "name": "reg",
            "command": "corekd compare reg.yaml",
            "seeds": [0, 1],
            "reference": "corekd",
            "variants": [
                {"variant": "teacher", "method": "teacher"},
                {"variant": "corekd", "method": "corekd"},
                {"variant": "restricted", "method": "corekd"},
            ],
            "corpora": {"sent": {"corpus": "toy", "task": "regression", "modalities": ["l", "a"]}},
        },
        "records": records,
        "trainings": [],
    }
    (tmp_path / "results.json").write_text(json.dumps(grid))
    text = render_markdown(build_blocks(read_grid(tmp_path)))
    assert md_table_after(text, "### Test, random missing at rate p (MAE)") == [
        ["method \\\\ p", "0.0", "0.5"],
        ["teacher", "1.100 ± 0.141", "1.700 ± 0.141"],
        ["corekd", "0.950 ± 0.071", "1.450 ± 0.071"],
        ["restricted", "1.050 ± 0.071", "n/a"],
    ]
    # AUC over p in {0, .5}: the mean of the two ends: corekd 1.2 and 1.2, teacher 1.5 and 1.3
    assert md_table_after(text, "### Area under the missing-rate curve (MAE)")[1:] == [
        ["teacher", "1.400 ± 0.141"],
        ["corekd", "1.200 ± 0.000"],
    ]
    assert "`restricted` seed 0: not scored at random:0.5: no AUC" in text
    assert "a negative difference favours the reference" in text
    # corekd - teacher, complete: -.2, -.1 -> mean -.15, std .0707, t = -.15 / (.0707 / sqrt 2) = -3 on one degree of
    # freedom (a Cauchy): p = 1 - (2 / pi) atan 3. AUC: -.3, -.1 -> t = -2, p = 1 - (2 / pi) atan 2.
    complete = md_table_after(text, "complete MAE:")
    assert complete[1][:4] == ["teacher (teacher)", "-0.150 ± 0.071", "2", format_p(1 - 2 / math.pi * math.atan(3))]
    assert complete[2][:4] == ["restricted", "-0.100 ± 0.000", "2", "–"]  # -.1 twice (up to rounding): no p
    auc = md_table_after(text, "random-curve AUC MAE:")
    assert auc[1][:4] == ["teacher (teacher)", "-0.200 ± 0.141", "2", format_p(1 - 2 / math.pi * math.atan(2))]
    assert auc[2][:4] == ["restricted", "–", "0", "–"]
    fixed = md_table_after(text, "fixed Avg MAE:")
    assert fixed[1][1:3] == ["–", "0"]  # no fixed condition scored: nothing to pair
