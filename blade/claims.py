"""The paper's claims as code: checks on a table of results, and verdicts that weigh seed noise.

``claims_table1`` / ``claims_table2`` test the claims of the paper's Tables 1 and 2 on one
wide table (rows: runs, columns FG-0..FG-3 and mean, IoU in %), as the paper states them.
``verdict`` / ``study_verdicts`` (issue 12) give each claim one of three answers, weighing
the run-to-run spread measured by the seed study: *holds*, *does not hold*, *within seed
noise*; see ``verdict`` for the rule.
"""

from __future__ import annotations

from .runs import LEVELS

def _check(claim, needed, table, test, evidence):
    """One claim: holds True/False, or None when a run it needs has no results yet."""
    if any(r not in table.index for r in needed):
        missing = [r for r in needed if r not in table.index]
        return {"claim": claim, "holds": None, "evidence": f"not run yet: {', '.join(missing)}"}
    return {"claim": claim, "holds": bool(test(table)), "evidence": evidence(table)}


def claims_table1(table) -> list:
    """The paper's Table 1 claims against a wide table (rows: run names, columns FG-0..3 and
    mean, IoU in %)."""
    def beats(a, others, levels):
        return lambda t: all(t.loc[a, lv] > t.loc[o, lv] for o in others for lv in levels)

    def show(runs, levels):
        return lambda t: "; ".join(f"{lv}: " + ", ".join(f"{r} {t.loc[r, lv]:.1f}" for r in runs)
                                   for lv in levels)

    out = [
        _check("BLADE beats both BoxInst baselines at FG-2 and FG-3",
               ["blade", "boxinst_bv", "boxinst_ba"], table,
               beats("blade", ["boxinst_bv", "boxinst_ba"], ["FG-2", "FG-3"]),
               show(["blade", "boxinst_bv", "boxinst_ba"], ["FG-2", "FG-3"])),
        _check("BLADE beats the BBTP-style baseline at every level", ["blade", "bbtp"], table,
               beats("blade", ["bbtp"], LEVELS), show(["blade", "bbtp"], LEVELS + ["mean"])),
        _check("BLADE has the best mean of the box-supervised methods",
               ["blade", "boxinst_bv", "boxinst_ba", "bbtp"], table,
               beats("blade", ["boxinst_bv", "boxinst_ba", "bbtp"], ["mean"]),
               show(["blade", "boxinst_bv", "boxinst_ba", "bbtp"], ["mean"])),
    ]
    gap = _check("Gap to full supervision (mean IoU points; a measurement, not a claim)",
                 ["blade", "full"], table, lambda t: True,
                 lambda t: f"full {t.loc['full', 'mean']:.1f} - BLADE {t.loc['blade', 'mean']:.1f}"
                           f" = {t.loc['full', 'mean'] - t.loc['blade', 'mean']:.1f}")
    gap["holds"] = None if gap["holds"] is None else "n/a"  # a number to report, not a claim
    out.append(gap)
    box = _check("What the input box alone scores (filled box, no training; a measurement)",
                 ["box_ba", "box_bv", "blade"], table, lambda t: True,
                 lambda t: "; ".join(f"{lv}: filled B_a {t.loc['box_ba', lv]:.1f}, filled B_v "
                                     f"{t.loc['box_bv', lv]:.1f}, BLADE {t.loc['blade', lv]:.1f}"
                                     for lv in ["FG-0", "FG-3", "mean"]))
    box["holds"] = None if box["holds"] is None else "n/a"
    out.append(box)
    return out


def claims_table2(table) -> list:
    """The paper's Table 2 claims against a wide table (rows '1'-'8', 'a'-'d')."""
    def drop(t, full, ablated, lv):
        return t.loc[full, lv] - t.loc[ablated, lv]

    pairs_fs = [("1", "5"), ("2", "6"), ("3", "7"), ("4", "8")]
    pairs_un = [("1", "2"), ("3", "4"), ("5", "6"), ("7", "8")]

    def pairs_text(pairs):
        return lambda t: ", ".join(f"{a} {t.loc[a, 'mean']:.1f} vs {b} {t.loc[b, 'mean']:.1f}"
                                   for a, b in pairs)

    rows = [str(k) for k in range(1, 9)]
    return [
        _check("The full model (row 1) has the best mean of rows 1-8", rows, table,
               lambda t: t.loc[rows, "mean"].idxmax() == "1",
               lambda t: f"best: row {t.loc[rows, 'mean'].idxmax()} "
                         f"({t.loc[rows, 'mean'].max():.1f}); row 1 {t.loc['1', 'mean']:.1f}"),
        _check("Dropping the neighbour loss (row 3 vs 1) hurts FG-3 most", ["1", "3"], table,
               lambda t: (max(LEVELS, key=lambda lv: drop(t, "1", "3", lv)) == "FG-3"
                          and drop(t, "1", "3", "FG-3") > 0),  # it must hurt at all
               lambda t: "row 1 minus row 3: " + ", ".join(
                   f"{lv} {drop(t, '1', '3', lv):+.1f}" for lv in LEVELS)),
        _check("Dropping fusion hurts (rows 1-4 beat rows 5-8 pairwise, mean)",
               [r for p in pairs_fs for r in p], table,
               lambda t: all(t.loc[a, "mean"] > t.loc[b, "mean"] for a, b in pairs_fs),
               pairs_text(pairs_fs)),
        _check("Dropping the uniform loss hurts (pairwise, mean)",
               [r for p in pairs_un for r in p], table,
               lambda t: all(t.loc[a, "mean"] > t.loc[b, "mean"] for a, b in pairs_un),
               pairs_text(pairs_un)),
        _check("The paper's weights (row b) have the best mean of rows a-d",
               ["a", "b", "c", "d"], table,
               lambda t: t.loc[["a", "b", "c", "d"], "mean"].idxmax() == "b",
               lambda t: ", ".join(f"{r} {t.loc[r, 'mean']:.1f}" for r in "abcd")),
    ]


def format_claims(claims) -> str:
    mark = {True: "holds", False: "DOES NOT HOLD", None: "open", "n/a": "measured"}
    return "\n".join(f"- [{mark[c['holds']]}] {c['claim']}: {c['evidence']}" for c in claims)


# -- verdicts that weigh seed noise (issue 12) --------------------------------------------------
HOLDS, FAILS, NOISE, OPEN = "holds", "does not hold", "within seed noise", "open"
PROTOCOL = "depends on the protocol"  # the protocols give different verdicts

# The paper's main claims as comparisons "run A beats run B at level L" (A, B: run names
# without seed suffix). A claim with several comparisons holds when all of them hold.
STUDY_CLAIMS = [
    ("BLADE beats BoxInst (B_v) at FG-2 and FG-3 (Table 1)",
     [("blade", "boxinst_bv", "FG-2"), ("blade", "boxinst_bv", "FG-3")]),
    ("BLADE beats BoxInst (B_a, known c) at FG-2 and FG-3 (Table 1)",
     [("blade", "boxinst_ba", "FG-2"), ("blade", "boxinst_ba", "FG-3")]),
    ("BLADE has a better mean than both BoxInst baselines (Table 1)",
     [("blade", "boxinst_bv", "mean"), ("blade", "boxinst_ba", "mean")]),
    ("The neighbour loss helps: row 1 beats row 3 in the mean (Table 2)",
     [("blade", "table2_3", "mean")]),
    ("The neighbour loss helps at FG-3 (row 1 beats row 3 there; the paper's largest drop)",
     [("blade", "table2_3", "FG-3")]),
    ("BLADE beats the filled amodal box B_a (what the known-c box alone scores), mean",
     [("blade", "box_ba", "mean")]),
    # Table 2's other claims (the paper's text, section "Ablation"), as pairwise comparisons of
    # its rows (run names: row 1 = blade, row k = table2_k; row b is row 1's run)
    ("The full model (row 1) has the best mean of rows 1-8 (Table 2)",
     [("blade", f"table2_{k}", "mean") for k in range(2, 9)]),
    ("Dropping fusion hurts: rows 1-4 beat rows 5-8 pairwise in the mean (Table 2)",
     [("blade", "table2_5", "mean"), ("table2_2", "table2_6", "mean"),
      ("table2_3", "table2_7", "mean"), ("table2_4", "table2_8", "mean")]),
    ("Dropping the uniform loss hurts: rows 1, 3, 5, 7 beat rows 2, 4, 6, 8 pairwise in the "
     "mean (Table 2)",
     [("blade", "table2_2", "mean"), ("table2_3", "table2_4", "mean"),
      ("table2_5", "table2_6", "mean"), ("table2_7", "table2_8", "mean")]),
    ("The paper's weights a = (2, 1, 1) (row b) beat rows a, c, d in the mean (Table 2)",
     [("blade", f"table2_{k}", "mean") for k in "acd"]),
]
# The claims about Table 2's ablations (notebook 07 shows these, notebook 08 the others).
TABLE2_CLAIMS = {c for c, comps in STUDY_CLAIMS
                 if all(a.startswith(("blade", "table2_")) and b.startswith("table2_")
                        for a, b, _ in comps)}


def verdict(diff: float, noise: float | None) -> str:
    """One comparison: ``diff`` = mean(A) - mean(B) over their seeds, in IoU points; ``noise``
    = the seed range (max - min over seeds) that applies. Beyond the noise either way the claim
    holds or does not; inside it, it is within seed noise; with no spread measured, open."""
    if noise is None:
        return OPEN
    if diff > noise:
        return HOLDS
    if diff < -noise:
        return FAILS
    return NOISE


def run_stats(tidy, value: str = "iou_amodal"):
    """Per (base run, level): mean over seeds (in %), range max - min (NaN with one seed) and
    the number of seeds. ``tidy``: rows with columns base, seed, level and ``value``."""
    import pandas as pd

    g = tidy.groupby(["base", "level"])[value]
    out = pd.DataFrame({"mean": g.mean() * 100, "range": (g.max() - g.min()) * 100,
                        "seeds": g.count()})
    out.loc[out["seeds"] < 2, "range"] = float("nan")
    return out


def compare(stats, a: str, b: str, level: str) -> dict:
    """One comparison A > B at a level, with the noise rule of ``verdict``: the larger seed
    range of A and B where either has 2+ seeds, else the largest range any configuration of
    the same setting shows at that level (the setting's measured spread), else none (open)."""
    import math

    if (a, level) not in stats.index or (b, level) not in stats.index:
        missing = [r for r in (a, b) if (r, level) not in stats.index]
        return {"verdict": OPEN, "text": f"not run yet: {', '.join(missing)}"}
    sa, sb = stats.loc[(a, level)], stats.loc[(b, level)]
    ranges = [r for r in (sa["range"], sb["range"]) if not math.isnan(r)]
    source = "their seeds"
    if not ranges:
        at_level = stats.xs(level, level="level")["range"].dropna()
        ranges, source = (list(at_level), "setting's widest") if len(at_level) else ([], "")
    noise = max(ranges) if ranges else None
    diff = sa["mean"] - sb["mean"]
    v = verdict(diff, noise)
    text = (f"{level}: {a} {sa['mean']:.1f} (n={int(sa['seeds'])}) vs {b} {sb['mean']:.1f} "
            f"(n={int(sb['seeds'])}), diff {diff:+.1f}, "
            + (f"noise {noise:.1f} ({source})" if noise is not None else "no seed spread"))
    return {"verdict": v, "text": text}


def combine(verdicts: list) -> str:
    """All comparisons of a claim: holds if all hold, does not hold if any fails, open if any
    is open, else within seed noise."""
    if any(v == FAILS for v in verdicts):
        return FAILS
    if any(v == OPEN for v in verdicts):
        return OPEN
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return NOISE


def study_verdicts(tidy, setting: str, protocol: str, claims=STUDY_CLAIMS) -> list:
    """One row per claim: claim, setting, protocol, verdict, evidence (the comparisons)."""
    stats = run_stats(tidy)
    rows = []
    for claim, comparisons in claims:
        parts = [compare(stats, a, b, lv) for a, b, lv in comparisons]
        rows.append({"claim": claim, "setting": setting, "protocol": protocol,
                     "verdict": combine([p["verdict"] for p in parts]),
                     "evidence": "; ".join(p["text"] for p in parts)})
    return rows


# -- the goal of the kit's variants (issue 13), checked like the paper's claims --------------------
def variant_goal(tidy, variant: str, setting: str, protocol: str) -> list:
    """Issue 13's three-part goal for one connectivity variant (a run name of ``VARIANTS``),
    each part a row like ``study_verdicts``' (claim, setting, protocol, verdict, evidence):

    (a) the variant matches or beats BoxInst (B_a, known c) in the mean: holds unless it is
        below by more than the seed noise (``compare``'s rule);
    (b) it stays within 1 point of Table 2 row 3 at FG-0: holds if mean(variant) - mean(row 3)
        >= -1, else does not hold (a fixed margin, no noise rule);
    (c) it beats the paper's recipe (``blade``) at FG-2 and FG-3 by more than the seed range.
    Open where a run is missing."""
    stats = run_stats(tidy)
    rows = []

    def row(claim, verdict_, evidence):
        rows.append({"claim": f"{variant}: {claim}", "setting": setting, "protocol": protocol,
                     "verdict": verdict_, "evidence": evidence})

    a = compare(stats, variant, "boxinst_ba", "mean")
    row("matches or beats BoxInst (B_a, known c) in the mean (goal a)",
        OPEN if a["verdict"] == OPEN else (FAILS if a["verdict"] == FAILS else HOLDS), a["text"])
    if (variant, "FG-0") in stats.index and ("table2_3", "FG-0") in stats.index:
        diff = stats.loc[(variant, "FG-0"), "mean"] - stats.loc[("table2_3", "FG-0"), "mean"]
        row("within 1 point of row 3 at FG-0 (goal b)", HOLDS if diff >= -1.0 else FAILS,
            f"FG-0: {variant} {stats.loc[(variant, 'FG-0'), 'mean']:.1f} vs table2_3 "
            f"{stats.loc[('table2_3', 'FG-0'), 'mean']:.1f}, diff {diff:+.1f} (margin -1.0)")
    else:
        missing = [r for r in (variant, "table2_3") if (r, "FG-0") not in stats.index]
        row("within 1 point of row 3 at FG-0 (goal b)", OPEN,
            f"not run yet: {', '.join(missing)}")
    parts = [compare(stats, variant, "blade", lv) for lv in ("FG-2", "FG-3")]
    row("beats the paper's recipe at FG-2 and FG-3 beyond the seed range (goal c)",
        combine([p["verdict"] for p in parts]), "; ".join(p["text"] for p in parts))
    return rows


def across_protocols(rows: list) -> list:
    """One more row per (claim, setting) judged under two or more protocols, with protocol
    "all": the common verdict where they agree; open where any is open; otherwise "depends on
    the protocol" (``PROTOCOL``): then the claim is about which location answers the test box,
    not about the method. The evidence lists the verdicts."""
    by_key = {}
    for r in rows:
        by_key.setdefault((r["claim"], r["setting"]), {})[r["protocol"]] = r["verdict"]
    out = []
    for (claim, setting), v in by_key.items():
        if len(v) < 2:
            continue
        verdicts = set(v.values())
        both = (verdicts.pop() if len(verdicts) == 1 else OPEN if OPEN in v.values()
                else PROTOCOL)
        out.append({"claim": claim, "setting": setting, "protocol": "all", "verdict": both,
                    "evidence": "; ".join(f"{p}: {x}" for p, x in sorted(v.items()))})
    return out
