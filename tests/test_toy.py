"""The toy optimisations behind notebooks 02 and 03 (their widget callbacks included)."""

import pytest
import torch
from matplotlib.figure import Figure

from blade.toy import (BandConfig, active_band, band_view, initial_logits, mask_scores,
                       optimize_mask, toy_instance)


@pytest.fixture(scope="module")
def toy():
    return toy_instance(seed=0)


def test_toy_instance_is_consistent(toy):
    h, w = toy["image"].shape[-2:]
    for key in ("amodal", "visible", "B_a", "B_v", "R", "m_v"):
        assert toy[key].shape == (1, 1, h, w), key
    a, v = toy["amodal"][0, 0], toy["visible"][0, 0]
    assert not (v & ~a).any() and (a & ~v).any()  # occluded
    assert (toy["B_a"][0, 0][a] == 1).all()  # the amodal box contains the amodal mask
    assert toy["R"].sum() > 0 and (toy["R"] <= toy["B_a"]).all()  # R inside B_a
    assert toy["color_similarity"].shape == (1, 8, h, w)


def test_initial_logits(toy):
    assert torch.equal(initial_logits(toy, BandConfig(init="visible")) > 0, toy["m_v"] > 0.5)
    assert torch.equal(initial_logits(toy, BandConfig(init="box")) > 0, toy["B_a"] > 0.5)
    with pytest.raises(ValueError, match="init must be"):
        initial_logits(toy, BandConfig(init="nope"))


def test_no_terms_means_nothing_moves(toy):
    res = optimize_mask(toy, BandConfig(steps=5, use_projection=False, use_pairwise=False,
                                        use_neighbor=False, use_uniform=False))
    assert torch.equal(res["m_a"] > 0.5, toy["m_v"][0, 0] > 0.5)


def test_neighbour_loss_grows_the_mask_into_the_occluded_part(toy):
    boxinst = optimize_mask(toy, BandConfig(steps=150, use_neighbor=False, use_uniform=False))
    blade = optimize_mask(toy, BandConfig(steps=150))
    assert blade["scores"]["occluded_recovered"] > boxinst["scores"]["occluded_recovered"]
    assert active_band(blade["m_a"], toy).any()
    hist = blade["history"]
    assert {"projection", "pairwise", "neighbor", "uniform", "total"} <= set(hist.columns)
    assert len(hist) == 150 and hist.total.iloc[-1] < hist.total.iloc[0]


def test_mask_scores_hand_case(toy):
    a, v = toy["amodal"][0, 0], toy["visible"][0, 0]
    s = mask_scores(v, toy)
    assert s["iou_visible"] == 1.0 and s["occluded_recovered"] == 0.0
    assert s["iou_amodal"] == pytest.approx(v.sum().item() / a.sum().item())


def test_band_view_is_the_widget_callback(toy):
    fig = band_view(toy, steps=20, K=2.0, use_uniform=False)
    assert isinstance(fig, Figure) and len(fig.axes) >= 3


def test_visible_perturbations_and_the_hidden_area_of_an_unoccluded_object():
    from blade.criterion import expansion_area
    from blade.toy import perturb_visible

    toy = toy_instance(seed=0)
    on = {m: perturb_visible(toy, m, seed=0)["m_v"] > 0.5
          for m in ("truth", "dilated", "shrunk", "noisy")}
    assert torch.equal(on["truth"], toy["visible"])
    assert (on["dilated"] >= on["truth"]).all() and on["dilated"].sum() > on["truth"].sum()
    assert (on["shrunk"] <= on["truth"]).all() and on["shrunk"].sum() < on["truth"].sum()
    flipped = (on["noisy"] ^ on["truth"]).float().mean().item()
    assert 0.05 < flipped < 0.15  # 10 % of the cells
    with pytest.raises(ValueError, match="m_v mode"):
        perturb_visible(toy, "blurred")
    # unoccluded: B_v = B_a, so "hidden" allows no expansion although R is not empty
    fg0 = toy_instance(seed=0, min_occlusion=0.0, max_occlusion=0.0)
    targets = {"region_masks": fg0["R"], "visible_box_masks": fg0["B_v"]}
    assert fg0["R"].sum() > 0 and expansion_area("hidden", targets).sum() == 0
    assert torch.equal(expansion_area("region", targets), fg0["R"])
    # "occluded" reads the same boxes per object: none for the unoccluded toy, all of B_a for
    # an occluded toy whose amodal box reaches beyond its visible box (seed 0), none for one
    # hidden only inside its box (seed 2: occlusion 0.73, B_v = B_a)
    targets["amodal_box_masks"] = fg0["B_a"]
    assert expansion_area("occluded", targets).sum() == 0
    for seed, pulled in ((0, True), (2, False)):
        occ = toy_instance(seed=seed)
        area = expansion_area("occluded", {"region_masks": occ["R"], "visible_box_masks":
                                           occ["B_v"], "amodal_box_masks": occ["B_a"]})
        assert occ["occlusion"] > 0.3
        assert torch.equal(area, occ["B_a"] if pulled else torch.zeros_like(occ["B_a"]))


def test_variants_view_draws_every_case_and_variant():
    import matplotlib.pyplot as plt

    from blade.toy import NE_ALLOWS, toy_instance, variants_view

    cases = {"occluded": toy_instance(seed=1),
             "FG-0 with R": toy_instance(seed=1, min_occlusion=0.0, max_occlusion=0.0)}
    fig = variants_view(cases, m_v="dilated", steps=5)
    axes = fig.axes
    assert len(axes) == len(cases) * len(NE_ALLOWS)
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("occluded, ne_allow=box")
    assert "FG-0 with R, ne_allow=occluded" in titles[-1]
    assert all("IoU" in t and "hidden recovered" in t for t in titles)
    plt.close(fig)
    with pytest.raises(ValueError, match="m_v must be one of"):
        variants_view(cases, m_v="blurred", steps=1)


def test_variants_explorer_redraws_on_change():
    from blade.toy import toy_instance
    from blade.widgets import variants_explorer

    box = variants_explorer({"occluded": toy_instance(seed=1)}, steps=5)
    assert box.out.last_error is None
    first = bytes(box.image.value)
    box.controls["m_v"].value = "shrunk"
    assert box.out.last_error is None and bytes(box.image.value) != first


def test_band_config_refuses_variants_the_toy_cannot_model():
    with pytest.raises(ValueError, match="depth cue needs the other objects' visible masks"):
        BandConfig(ne_allow="depth")
    with pytest.raises(ValueError, match="must be one of"):
        BandConfig(ne_allow="everywhere")
