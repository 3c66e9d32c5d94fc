"""corekd.reporting.tables: the mean ± std text of plain rows and the tables built from them (the analyses tables of
run and grid reports), worked out by hand."""

from corekd.reporting.blocks import Table, markdown_table_lines
from corekd.reporting.tables import grouped_table, mean_std_text


def test_mean_std_text_defaults_and_filtering():
    assert mean_std_text([0.5]) == "0.500"
    assert mean_std_text([1.0, 2.0]) == "1.500 ± 0.707"  # sample std: sqrt(0.5)
    assert mean_std_text([1.0, 2.0, 4.0]) == "2.333 ± 1.528"  # sqrt(((4/3)^2 + (1/3)^2 + (5/3)^2) / 2) = sqrt(7/3)
    assert mean_std_text([None, float("nan"), 2.0, float("inf")]) == "2.000"
    assert mean_std_text([None, float("nan")]) == "–"
    assert mean_std_text([]) == "–"
    assert mean_std_text([0.25, 0.75], 100.0, 1) == "50.0 ± 35.4"


def test_grouped_table_by_hand():
    rows = [
        {"variant": "b", "k": "x", "v": 1},
        {"variant": "a", "k": "y", "v": 2},
        {"variant": "b", "k": "x", "v": 3},
        {"variant": "b", "k": "y", "v": 4},
    ]
    # rows and columns in first-seen order; a cell: mean ± sample std of its rows' values
    assert grouped_table(rows, "k", "v", "m") == Table(
        ("m", "x", "y"), (("b", "2.000 ± 1.414", "4.000"), ("a", "–", "2.000"))
    )
    assert grouped_table(rows, "k", "v", "m", variants=["a", "c"], columns=["y"]) == Table(
        ("m", "y"), (("a", "2.000"), ("b", "4.000"))
    )  # the given order, then any variant it does not name
    assert grouped_table([], "k", "v", "m") == Table(("m",), ())


def test_grouped_table_as_markdown():
    rows = [
        {"variant": "no_kd", "condition": "fixed:l", "x": 0.12345},
        {"variant": "no_kd", "condition": "fixed:l", "x": 0.32345},
        {"variant": "corekd", "condition": "fixed:l", "x": 1.5},
        {"variant": "corekd", "condition": "random:0.5", "x": 2.0},
        {"variant": "corekd", "condition": "random:0.5", "x": float("nan")},  # not finite: left out of the cell
        {"variant": "corekd", "condition": "random:0.5", "x": None},  # no value: left out too
    ]

    def table(rows, first="method", **kw):
        return markdown_table_lines(grouped_table(rows, "condition", "x", first, **kw))

    assert table(rows) == [
        "| method | fixed:l | random:0.5 |",
        "|---|---|---|",
        "| no_kd | 0.223 ± 0.141 | – |",
        "| corekd | 1.500 | 2.000 |",
    ]
    assert table(rows[:1] + rows[4:]) == [
        "| method | fixed:l | random:0.5 |",
        "|---|---|---|",
        "| no_kd | 0.123 | – |",
        "| corekd | – | – |",
    ]
    assert table(rows[2:], "model", scale=100.0, digits=1)[0] == "| model | fixed:l | random:0.5 |"
    assert table(rows[2:], scale=100.0, digits=1)[2] == "| corekd | 150.0 | 200.0 |"
