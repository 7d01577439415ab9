"""Plot helpers draw on the given ax and return it; widget callbacks are plain, tested functions."""

import os

import ipywidgets as W
import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from blade import viz
from blade.data import AmodalDataset
from blade.widgets import explorer, figure_png, overlap_explorer, run_safely


@pytest.fixture(scope="module")
def ds(synthetic_dir):
    return AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                         os.path.join(synthetic_dir, "val"), mode="eval")


def test_helpers_return_their_ax(ds):
    item = ds[0]
    fig, ax = plt.subplots()
    assert viz.show_image(ax, item["image"]) is ax
    assert viz.show_mask(ax, item["amodal_masks"][0]) is ax
    assert viz.show_mask(ax, item["amodal_masks"][0], outline=True) is ax
    assert viz.show_box(ax, item["amodal_boxes"][0]) is ax
    assert viz.show_scene(ax, item, regions=True) is ax
    assert viz.show_instance_overlap(ax, item, 0, stride=4) is ax
    assert len(ax.patches) > 0 and len(ax.images) > 0
    plt.close(fig)


def test_instance_overlap_draws_region_box_when_there_is_one(ds):
    from blade.overlap import overlap_regions

    for i in range(len(ds)):
        item = ds[i]
        _, has = overlap_regions(item["amodal_boxes"])
        if has.any():
            k = int(has.nonzero()[0])
            fig, ax = plt.subplots()
            viz.show_instance_overlap(ax, item, k)
            labels = [p.get_label() for p in ax.patches]
            assert "$R$" in labels and "$B_a$" in labels and "$B_v$" in labels
            plt.close(fig)
            return
    pytest.skip("no overlapping instance in the tiny benchmark")


def test_instance_index_is_checked(ds):
    fig, ax = plt.subplots()
    with pytest.raises(IndexError, match="out of range"):
        viz.show_instance_overlap(ax, ds[0], 99)
    plt.close(fig)


def test_overlap_view_is_a_figure(ds):
    fig = viz.overlap_view(ds, scene=1, instance=0, stride=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert figure_png(fig).startswith(b"\x89PNG")


def test_explorer_redraws_on_change_and_shows_errors():
    calls = []

    def render(a, flag):
        calls.append((a, flag))
        if a == 7:
            raise ValueError("bad value 7")
        fig, ax = plt.subplots()
        ax.plot([0, a])
        return fig

    box = explorer(render, {"a": W.IntSlider(value=1, max=10), "flag": W.Checkbox(value=True)})
    assert calls == [(1, True)] and bytes(box.image.value).startswith(b"\x89PNG")
    first = box.image.value
    box.controls["a"].value = 3
    assert calls[-1] == (3, True) and bytes(box.image.value) != bytes(first)
    box.controls["a"].value = 7
    assert isinstance(box.out.last_error, ValueError)
    assert "bad value 7" in "".join(o.get("text", "") for o in box.out.outputs)
    box.controls["a"].value = 2  # recovers, and the old error text is gone
    assert box.out.last_error is None and box.out.outputs == ()


def test_run_safely_returns_the_result():
    out = W.Output()
    assert run_safely(out, lambda x: x + 1, 1) == 2 and out.last_error is None


def test_overlap_explorer_keeps_instance_index_valid(ds):
    box = overlap_explorer(ds)
    assert box.out.last_error is None and box.image.value
    for scene in range(len(ds)):
        box.controls["scene"].value = scene
        assert box.controls["instance"].max == len(ds[scene]["labels"]) - 1
        box.controls["instance"].value = box.controls["instance"].max
        assert box.out.last_error is None
    box.controls["stride"].value = 4
    assert box.out.last_error is None


def test_band_explorer_reoptimises_on_change():
    from blade.toy import toy_instance
    from blade.widgets import band_explorer

    box = band_explorer(toy_instance(seed=1), steps=10)
    assert box.out.last_error is None
    first = bytes(box.image.value)
    box.controls["use_neighbor"].value = False
    assert box.out.last_error is None and bytes(box.image.value) != first
    box.controls["steps"].value = 0  # a degenerate but valid setting still draws
    assert box.out.last_error is None


def test_edge_survival_plot(ds):
    from blade.losses import color_similarity

    sim = color_similarity(ds[0]["image"][None])[0]
    fig, ax = plt.subplots()
    assert viz.show_edge_survival(ax, sim, 0.3, image=ds[0]["image"]) is ax
    assert len(ax.images) == 2
    plt.close(fig)


@pytest.fixture(scope="module")
def evaluated(synthetic_dir):
    import torch

    from blade.config import preset
    from blade.evaluate import evaluate
    from blade.model import BladeModel

    val = AmodalDataset(os.path.join(synthetic_dir, "val.json"),
                        os.path.join(synthetic_dir, "val"), mode="eval")
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    return model, val, evaluate(model, val, limit=2, progress=False)


def test_failure_view_shows_the_ranked_object(evaluated):
    model, val, rows = evaluated
    fig = viz.failure_view(model, val, rows, rank=0)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    worst = rows.sort_values("iou_amodal", kind="stable").iloc[0]
    assert f"image {worst['image_id']}" in fig.axes[0].get_title()
    plt.close(fig)
    fig = viz.failure_view(model, val, rows, rank=10**6)  # clamped to the last object
    assert f"rank {len(rows) - 1} of {len(rows)}" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="no object has a value"):
        viz.failure_view(model, val, rows.assign(iou_occluded=float("nan")),
                         sort_by="iou_occluded")


def test_failure_explorer_redraws_on_change(evaluated):
    from blade.widgets import failure_explorer

    model, val, rows = evaluated
    box = failure_explorer(model, val, rows)
    first = box.image.value
    assert first and box.out.last_error is None
    box.controls["rank"].value = 1
    assert box.out.last_error is None and box.image.value != first
    plt.close("all")


def test_result_plots_return_their_ax(ds):
    import pandas as pd

    tidy = pd.DataFrame({"method": ["A"] * 5 + ["B"] * 5,
                         "level": ["FG-0", "FG-1", "FG-2", "FG-3", "mean"] * 2,
                         "iou_amodal": [0.7, 0.6, 0.5, 0.4, 0.55, 0.6, 0.5, 0.3, 0.2, 0.4]})
    fig, axes = plt.subplots(1, 2)
    assert viz.plot_levels(axes[0], tidy) is axes[0]
    assert len(axes[0].patches) >= 10  # ten bars
    table = tidy.pivot(index="method", columns="level", values="iou_amodal") * 100
    assert viz.plot_table_heatmap(axes[1], table) is axes[1]
    plt.close(fig)
    seeds = tidy.rename(columns={"method": "base"}).assign(seed=0)
    seeds = pd.concat([seeds, seeds.assign(seed=1, iou_amodal=seeds["iou_amodal"] + 0.01)])
    fig, ax = plt.subplots()
    assert viz.plot_seeds(ax, seeds) is ax
    ys = sorted(y for c in ax.collections for _, y in c.get_offsets())
    assert len(ys) == 20 and ys[-1] == pytest.approx(71.0)  # 2 configs x 5 levels x 2 seeds, in %
    plt.close(fig)
    item = ds[0]
    fig, axes = plt.subplots(1, 3)
    pred = item["amodal_masks"][0].numpy()
    assert list(viz.show_qualitative_row(axes, item, 0, [pred, pred])) == list(axes)
    assert axes[1].texts[0].get_text() == "IoU 1.00"  # the ground truth scores 1
    plt.close(fig)


def test_blade_diagram_draws_every_block_and_arrow():
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    from blade.viz import _DIAGRAM_ARROWS, _DIAGRAM_BLOCKS, draw_blade_diagram

    fig, ax = plt.subplots()
    assert draw_blade_diagram(ax) is ax
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(boxes) == len(_DIAGRAM_BLOCKS) and len(arrows) == len(_DIAGRAM_ARROWS)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "fusion (Eq. 2)" in texts and "connectivity" in texts
    plt.close(fig)
