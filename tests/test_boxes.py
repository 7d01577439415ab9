"""The pixel convention of blade.boxes, by hand and as properties."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from blade.boxes import box_bitmasks, grid_size, mask_to_box, xywh_to_xyxy, xyxy_to_xywh


def test_xywh_round_trip():
    b = torch.tensor([[1.5, 2.0, 3.0, 4.25], [0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(xyxy_to_xywh(xywh_to_xyxy(b)), b)
    assert xywh_to_xyxy(b)[0].tolist() == [1.5, 2.0, 4.5, 6.25]


def test_bitmask_hand_case_half_open():
    # box [1, 0, 3, 2] covers pixel columns 1, 2 and rows 0, 1 (centres 1.5, 2.5 / 0.5, 1.5)
    m = box_bitmasks(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), 3, 4)[0, 0]
    expected = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(m, expected)
    # a box edge exactly on a pixel centre: x1 on it includes the pixel, x2 on it excludes it
    m = box_bitmasks(torch.tensor([[0.5, 0.0, 2.5, 1.0]]), 1, 4)[0, 0]
    assert m.tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_bitmask_stride_4_samples_boxinst_pixels():
    # at stride 4 cell j stands for pixel 4j + 2 (centre 4j + 2.5)
    m = box_bitmasks(torch.tensor([[2.0, 0.0, 7.0, 16.0]]), 16, 16, stride=4)[0, 0]
    assert m.shape == (4, 4)
    assert m[0].tolist() == [1.0, 1.0, 0.0, 0.0]  # pixels 2 and 6 are in [2, 7), 10 is not


def test_degenerate_and_empty():
    assert box_bitmasks(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), 10, 10).sum() == 0
    assert box_bitmasks(torch.zeros(0, 4), 10, 10).shape == (0, 1, 10, 10)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 4, 8]),
       st.lists(st.floats(-10, 50, allow_nan=False), min_size=4, max_size=4))
def test_strided_equals_subsampled_full_resolution(h, w, stride, coords):
    x1, x2 = sorted(coords[:2])
    y1, y2 = sorted(coords[2:])
    box = torch.tensor([[x1, y1, x2, y2]])
    full = box_bitmasks(box, h, w, 1)
    strided = box_bitmasks(box, h, w, stride)
    assert strided.shape[-2:] == (grid_size(h, stride), grid_size(w, stride))
    assert torch.equal(strided, full[..., stride // 2::stride, stride // 2::stride])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20), st.integers(0, 20), st.integers(1, 10), st.integers(1, 10))
def test_mask_box_round_trip_matches_pycocotools(x, y, w, h):
    mask = np.zeros((32, 32), bool)
    mask[y:y + h, x:x + w] = True
    box = mask_to_box(mask)
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bx, by, bw, bh = mask_utils.toBbox(rle)
    assert box.tolist() == [bx, by, bx + bw, by + bh]
    # rasterizing the box of a rectangle gives the rectangle back
    assert np.array_equal(box_bitmasks(torch.tensor(box[None]), 32, 32)[0, 0].bool().numpy(),
                          mask)
