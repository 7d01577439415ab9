"""The committed write-up agrees with the committed numbers: every verdict table of
``results/README.md`` (a "Verdict table, setting `S`:" line, then a table of claim x protocol)
holds exactly the verdicts of ``results/verdicts.csv`` for that setting, and no claim of the CSV
is left out (issue 12: "the README's verdict table exists and agrees with the CSVs")."""

import os
import re

import pandas as pd

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PROTOCOLS = ["box", "box_match", "detections", "all"]


def readme_tables(text: str) -> dict:
    """{setting: {(claim, protocol): verdict}} from the README's verdict tables."""
    tables, setting = {}, None
    for line in text.splitlines():
        m = re.match(r"Verdict table, setting `([^`]+)`:", line)
        if m:
            setting = m.group(1)
            tables[setting] = {}
            continue
        if setting and line.startswith("| ") and not line.startswith(("| claim |", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 1 + len(PROTOCOLS), f"results/README.md: bad row {line!r}"
            for p, v in zip(PROTOCOLS, cells[1:]):
                tables[setting][(cells[0], p)] = v
        elif setting and tables[setting] and not line.startswith("|"):
            setting = None  # the table ended
    return tables


def test_readme_verdict_tables_agree_with_verdicts_csv():
    with open(os.path.join(ROOT, "results", "README.md")) as f:
        tables = readme_tables(f.read())
    csv = pd.read_csv(os.path.join(ROOT, "results", "verdicts.csv"))
    assert set(tables) == set(csv["setting"]), "a setting of verdicts.csv has no table"
    for setting, table in tables.items():
        rows = csv[csv["setting"] == setting]
        want = {(r.claim, r.protocol): r.verdict for r in rows.itertuples()}
        assert table == want, f"results/README.md: the `{setting}` verdict table differs from " \
                              f"verdicts.csv: {set(table.items()) ^ set(want.items())}"


def test_the_parser_reads_a_table_and_stops_after_it():
    text = ("Verdict table, setting `x`:\n\n| claim | box | box_match | detections | all |\n"
            "|---|---|---|---|---|\n| A beats B | holds | holds | open | open |\n\n"
            "| other | table | here | too | x |\n")
    assert readme_tables(text) == {"x": {("A beats B", "box"): "holds",
                                         ("A beats B", "box_match"): "holds",
                                         ("A beats B", "detections"): "open",
                                         ("A beats B", "all"): "open"}}
