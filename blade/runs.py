"""Every run of the kit's experiments by name: what configuration it is, how it is labelled.

A run name is a method of the paper's Table 1 (``METHODS``), a no-training reference
(``REFERENCES``), a row of Table 2 (``table2_<row>``; rows 1 and b are the full model, the run
``blade``), or a kit variant of the connectivity loss (``VARIANTS``, issue 13), each optionally
with a ``_seed<N>`` suffix (the same configuration with ``Config.seed = N``). The tables a CLI
call runs are lists of names (``table_runs``). :mod:`blade.experiments` trains and evaluates
them; :mod:`blade.claims` turns their results into the paper's claims and verdicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .criterion import TABLE2_ROWS

@dataclass(frozen=True)
class Method:
    label: str  # name in tables and figures
    overrides: dict = field(default_factory=dict)  # Config fields that make this method
    note: str = ""  # what it stands for


METHODS = {
    "blade": Method("BLADE", {}, "three branches, connectivity loss, fusion; input B_v"),
    "boxinst_bv": Method("BoxInst (B_v)", dict(use_amodal=False, use_fusion=False),
                         "visible branch only, its mask is the prediction; input B_v"),
    "boxinst_ba": Method("BoxInst (B_a, known c)",
                         dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                              detect_box="amodal"),
                         "one branch, projection + pairwise on B_a; input B_a"),
    "bbtp": Method("BBTP-style MIL (B_a, known c)",
                   dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                        vis_loss="mil", detect_box="amodal"),
                   "one branch, box tightness MIL + smoothness on B_a; input B_a"),
    "full": Method("Full supervision (masks)",
                   dict(use_amodal=False, use_fusion=False, vis_target="amodal",
                        vis_loss="dice"),
                   "one branch, dice on ground-truth amodal masks (upper bound); input B_v"),
}
# Reference rows without training: the given box itself, filled, as the amodal mask. They show
# what the input box alone is worth, i.e. how much the known-c setting gives away.
REFERENCES = {"box_ba": Method("Filled B_a (known c, no training)", {"detect_box": "amodal"}),
              "box_bv": Method("Filled B_v (no training)", {"detect_box": "visible"})}
TABLE1 = ["blade", "boxinst_bv", "boxinst_ba", "bbtp", "full", "box_ba", "box_bv"]

# Table 2: row -> run name. Rows 1 and b are the full model, i.e. the "blade" run.
TABLE2_RUNS = {row: ("blade" if row in ("1", "b") else f"table2_{row}") for row in TABLE2_ROWS}
TABLE2_ORDER = ["1", "3", "5", "2", "4", "6", "7", "8", "a", "c", "d", "b"]  # run order
LEVELS = ["FG-0", "FG-1", "FG-2", "FG-3"]
# Seed study: the same configuration trained again with another ``Config.seed`` (weights, data
# order, augmentation; the data stay the same). A run name ``<run>_seed<N>`` is run ``<run>``
# with seed N; the plain name is seed 0. Rows 1 and 3 first: their gap is the NE claim.
SEEDS = ["blade_seed1", "table2_3_seed1", "blade_seed2", "table2_3_seed2"]
# The reproduction study (issue 12): the five core runs and seeds 1-2 of BLADE and row 3, the
# configurations whose comparisons the paper's main claims rest on, run at each scale.
STUDY = ["blade", "table2_3", "blade_seed1", "table2_3_seed1", "blade_seed2", "table2_3_seed2",
         "boxinst_ba", "boxinst_bv", "full", "box_ba", "box_bv"]
# Kit variants of the connectivity loss (issue 13; ``blade.criterion.expansion_area``): the
# paper's BLADE with one change each, compared on the same footing as the study's runs.
VARIANTS = {
    "var_region": Method("BLADE, l_ne expands only inside R", {"ne_allow": "region"}),
    "var_hidden": Method("BLADE, l_ne expands only into R minus B_v", {"ne_allow": "hidden"}),
    "var_warmup": Method("BLADE, connectivity warmed up with pairwise", {"con_warmup": True}),
    "var_hidden_warmup": Method("BLADE, hidden + warm-up",
                                {"ne_allow": "hidden", "con_warmup": True}),
    "var_isolate": Method("BLADE, connectivity trains only the amodal head",
                          {"con_isolate": True}),
    # var_isolate's first run collapsed (m_a all ones from iteration ~27, after a spike of
    # l_ne's gradient into the amodal controller rows: results/cpu/isolate_probe.txt); the
    # warm-up keeps l_ne small while V_pov (m_v > t) is still noise
    "var_isolate_warmup": Method("BLADE, isolate + warm-up",
                                 {"con_isolate": True, "con_warmup": True}),
    "var_depth": Method("BLADE, l_ne expands only behind others' visible masks",
                        {"ne_allow": "depth"}),
    # an occlusion flag per object from the training boxes: pulled as in the paper only when
    # B_a reaches beyond B_v (the object is provably hidden somewhere); FG-0 objects never are
    "var_occluded": Method("BLADE, l_ne pulls only objects whose B_a exceeds B_v",
                           {"ne_allow": "occluded"}),
}
# The variants table: the paper's recipe, the variants and the references they must beat.
VARIANT_TABLE = ["blade", "var_hidden", "var_region", "var_warmup", "var_hidden_warmup",
                 "var_isolate", "var_isolate_warmup", "var_depth", "var_occluded", "table2_3",
                 "boxinst_ba", "boxinst_bv", "full"]


def method(name: str) -> Method:
    """The Method of a Table 1 run (trained method or no-training reference) or variant."""
    for table in (METHODS, REFERENCES, VARIANTS):
        if name in table:
            return table[name]
    raise KeyError(name)


def split_seed(name: str) -> tuple:
    """``"table2_3_seed1"`` -> ``("table2_3", 1)``; a name without the suffix -> ``(name, 0)``."""
    m = re.fullmatch(r"(.+)_seed(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def run_overrides(name: str) -> dict:
    """Config overrides of a run name (a method of Table 1, a row of Table 2, either with a
    ``_seed<N>`` suffix)."""
    base, seed = split_seed(name)
    if seed:
        if base in REFERENCES:
            raise ValueError(f"run {name!r}: a reference row has no training, hence no seed")
        return dict(run_overrides(base), seed=seed)
    if name in METHODS or name in REFERENCES or name in VARIANTS:
        return dict(method(name).overrides)
    if name.startswith("table2_") and name[7:] in TABLE2_ROWS:
        return dict(TABLE2_ROWS[name[7:]])
    raise ValueError(f"unknown run {name!r}; runs are {sorted(METHODS) + sorted(REFERENCES)}, "
                     f"{sorted(n for n in TABLE2_RUNS.values() if n != 'blade')} and "
                     f"{sorted(VARIANTS)}, each optionally with a _seed<N> suffix")


def run_label(name: str) -> str:
    base, seed = split_seed(name)
    if seed:
        return f"{run_label(base)}, seed {seed}"
    if name in METHODS or name in REFERENCES or name in VARIANTS:
        return method(name).label
    row = name[7:]
    o = TABLE2_ROWS[row]
    if row.isdigit():
        on = [k for k, key in (("UN", "use_uniform"), ("NE", "use_neighbor"),
                               ("FS", "use_fusion")) if o[key]]
        return f"{row}: " + ("+".join(on) if on else "none")
    return f"{row}: a=({o['alpha_proj']:g}, {o['alpha_pair']:g}, {o['alpha_con']:g})"


def table_runs(table: str) -> list:
    if table == "table1":
        return list(TABLE1)
    if table == "table2":  # the rows behind the paper's main claims first (NE, FS, UN)
        return list(dict.fromkeys(TABLE2_RUNS[r] for r in TABLE2_ORDER))
    if table == "seeds":
        return list(SEEDS)
    if table == "study":
        return list(STUDY)
    if table == "variants":
        return list(VARIANT_TABLE)
    raise ValueError(f"unknown table {table!r}")
