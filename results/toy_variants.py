"""The free-map study of the connectivity-loss variants (issue 13), before any training.

    python results/toy_variants.py            # -> results/toy_variants.csv, summary printed

For 3 seeds, an occluded instance and an unoccluded one that still gets an overlap region
(FG-0 with R), each fixed visible prediction m_v (the truth, dilated or shrunk by one cell,
10 % noise) and each ``ne_allow`` (box = the paper's Eq. 11, region = R, hidden = R minus
B_v, occluded = the paper's rule only when B_a reaches beyond B_v): a free amodal logit map
optimised for 300 Adam steps under the paper's amodal terms (projection, pairwise, neighbour,
uniform; ``blade.toy.variant_study``). Scores: amodal IoU, the share of the occluded part
recovered, and the area outside the true amodal mask (in units of that mask's area: the
overshoot).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blade.toy import variant_study  # noqa: E402

if __name__ == "__main__":
    t0 = time.perf_counter()
    df = variant_study()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_variants.csv")
    df.round(4).to_csv(out, index=False)
    cols = ["iou_amodal", "occluded_recovered", "outside_amodal"]
    print(df.groupby(["case", "m_v", "ne_allow"])[cols].mean().round(3).to_string())
    print("\nmean over m_v modes and seeds:")
    print(df.groupby(["case", "ne_allow"])[cols].mean().round(3).to_string())
    print(f"\n{len(df)} optimisations in {time.perf_counter() - t0:.0f} s -> {out}")
