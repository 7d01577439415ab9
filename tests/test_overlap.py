"""Overlap regions (paper Eq. 3-6): hand cases and properties against a brute-force loop."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blade.overlap import (occluded_coverage, overlap_regions, pairwise_intersections,
                           region_bitmasks)


def brute_force(boxes):
    """Eq. 4-6 written as plain loops over pairs."""
    out, has = [], []
    for i, bi in enumerate(boxes):
        parts = []
        for j, bj in enumerate(boxes):
            if i == j:
                continue
            x1, y1 = max(bi[0], bj[0]), max(bi[1], bj[1])
            x2, y2 = min(bi[2], bj[2]), min(bi[3], bj[3])
            if x2 > x1 and y2 > y1:
                parts.append((x1, y1, x2, y2))
        if parts:
            out.append([min(p[0] for p in parts), min(p[1] for p in parts),
                        max(p[2] for p in parts), max(p[3] for p in parts)])
            has.append(True)
        else:
            out.append([0.0, 0.0, 0.0, 0.0])
            has.append(False)
    return out, has


def test_figure_3_envelope():
    # instance 0 overlapped by two others (paper Fig. 3): the envelope of both intersections
    boxes = torch.tensor([[10.0, 10.0, 50.0, 50.0], [40.0, 0.0, 60.0, 20.0],
                          [0.0, 40.0, 20.0, 60.0], [100.0, 100.0, 110.0, 110.0]])
    regions, has = overlap_regions(boxes)
    assert has.tolist() == [True, True, True, False]
    assert regions[0].tolist() == [10.0, 10.0, 50.0, 50.0]  # envelope of (40,10,50,20), (10,40,20,50)
    assert regions[1].tolist() == [40.0, 10.0, 50.0, 20.0]
    assert regions[2].tolist() == [10.0, 40.0, 20.0, 50.0]
    assert regions[3].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_touching_edges_do_not_overlap():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0], [10.0, 10.0, 12, 12]])
    _, has = overlap_regions(boxes)
    assert not has.any()


def test_image_ids_separate_images():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    assert overlap_regions(boxes)[1].all()
    assert not overlap_regions(boxes, image_ids=torch.tensor([0, 1]))[1].any()


def test_empty_and_single():
    r, h = overlap_regions(torch.zeros(0, 4))
    assert r.shape == (0, 4) and h.shape == (0,)
    r, h = overlap_regions(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert not h.any() and r.abs().sum() == 0


def test_region_bitmask_matches_region_box():
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0], [20, 20, 24, 24]])
    bm = region_bitmasks(boxes, 16, 32)
    assert bm.shape == (3, 1, 16, 32)
    assert bm[0, 0, 4:8, 4:8].all() and bm[0].sum() == 16
    assert torch.equal(bm[0], bm[1]) and bm[2].sum() == 0
    assert region_bitmasks(boxes, 16, 32, stride=4).shape == (3, 1, 4, 8)


def test_occluded_coverage():
    a = np.zeros((4, 4), bool)
    a[:, :2] = True
    v = a.copy()
    v[:, 1] = False  # occluded: column 1 (4 pixels)
    r = np.zeros((4, 4), bool)
    r[:2, 1:] = True
    assert occluded_coverage(r, a, v) == 0.5
    assert np.isnan(occluded_coverage(r, a, a))


box_strategy = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(1, 30),
                         st.integers(1, 30)).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=150, deadline=None)
@given(st.lists(box_strategy, min_size=0, max_size=9), st.randoms(use_true_random=False))
def test_properties_against_brute_force(box_list, rnd):
    boxes = torch.tensor(box_list, dtype=torch.float32).reshape(-1, 4)
    regions, has = overlap_regions(boxes)
    ref, ref_has = brute_force(box_list)
    assert has.tolist() == ref_has
    assert regions.tolist() == [[float(v) for v in r] for r in ref]
    inter, valid = pairwise_intersections(boxes)
    for i in range(len(box_list)):
        # empty exactly when no other box intersects with positive area
        assert bool(has[i]) == bool(valid[i].any())
        if has[i]:  # inside its own amodal box
            assert (regions[i, :2] >= boxes[i, :2]).all() and (regions[i, 2:] <= boxes[i, 2:]).all()
    # invariant to instance order
    perm = list(range(len(box_list)))
    rnd.shuffle(perm)
    r2, h2 = overlap_regions(boxes[perm])
    assert torch.equal(r2, regions[perm]) and torch.equal(h2, has[perm])
