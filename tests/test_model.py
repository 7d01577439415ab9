"""The network: parameter counts, dynamic heads, backbones, training forward, prediction."""

import os
import urllib.error

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from blade.backbones import (EfficientNetLite0, WeightsUnavailable, build_backbone,
                             load_lite0_imagenet, lite0_weights_path)
from blade.config import preset
from blade.data import AmodalDataset
from blade.model import (BladeModel, aligned_upsample, fcos_candidates, head_param_count,
                         run_dynamic_head)


def test_param_counts_match_condinst_and_boxinst():
    assert head_param_count(16 + 2) == 233  # BoxInst: 16 mask channels + 2 coordinates
    assert head_param_count(8 + 2) == 169  # CondInst: 8 mask channels
    assert head_param_count(16 + 2 + 1) == 241  # BLADE amodal head: + m_v


def test_dynamic_head_equals_per_instance_convolutions():
    torch.manual_seed(0)
    n, c, h, w = 3, 5, 4, 6
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    params = torch.randn(n, head_param_count(c, 4, 3), dtype=torch.float64)
    out = run_dynamic_head(x, params, channels=4, layers=3)
    for i in range(n):  # the same instance alone, written as plain matrix products
        p = params[i]
        w1, p = p[:c * 4].reshape(4, c), p[c * 4:]
        w2, p = p[:16].reshape(4, 4), p[16:]
        w3, p = p[:4].reshape(1, 4), p[4:]
        b1, b2, b3 = p[:4], p[4:8], p[8:9]
        y = F.relu(torch.einsum("oc,chw->ohw", w1, x[i]) + b1[:, None, None])
        y = F.relu(torch.einsum("oc,chw->ohw", w2, y) + b2[:, None, None])
        y = torch.einsum("oc,chw->ohw", w3, y) + b3[:, None, None]
        assert torch.allclose(out[i], y)
    assert run_dynamic_head(x[:0], params[:0], 4, 3).shape == (0, 1, h, w)
    # an extra input channel (the amodal head's m_v) equals concatenating it to x
    m = torch.rand(n, 1, h, w, dtype=torch.float64)
    params = torch.randn(n, head_param_count(c + 1, 4, 3), dtype=torch.float64)
    cat = run_dynamic_head(torch.cat([x, m], 1), params, channels=4, layers=3)
    assert torch.allclose(run_dynamic_head(x, params, 4, 3, extra=m), cat)


def test_lazy_controller_equals_the_full_convolution_at_every_level_and_border():
    from blade.model import ControllerRegressionHead

    torch.manual_seed(0)
    head = ControllerRegressionHead(32, 1, num_params=11, num_convs=1).double()
    nn_init = torch.nn.init
    nn_init.normal_(head.controller.weight)
    nn_init.normal_(head.controller.bias)
    towers = [torch.randn(2, 32, h, w, dtype=torch.float64) for h, w in ((6, 5), (3, 3), (1, 2))]
    full = torch.cat([head.controller(t).flatten(2) for t in towers], dim=2)  # [2, P, 41]
    n_loc = full.shape[-1]
    img = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    idx = torch.tensor([0, 29, 4, 30, 38, n_loc - 1, 35])  # corners, level starts, last location
    lazy = head.controller_at(towers, img, idx)
    assert torch.allclose(lazy, full[img, :, idx])
    # every location of every level, both images
    img = torch.arange(2).repeat_interleave(n_loc)
    idx = torch.arange(n_loc).repeat(2)
    assert torch.allclose(head.controller_at(towers, img, idx), full[img, :, idx])
    assert head.controller_at(towers, img[:0], idx[:0]).shape == (0, 11)


def test_aligned_upsample_keeps_constants_and_shape():
    x = torch.full((2, 1, 5, 7), 3.0)
    y = aligned_upsample(x, 2)
    assert y.shape == (2, 1, 10, 14) and torch.allclose(y, x.new_full(y.shape, 3.0))


def test_lite0_imagenet_weights_load_and_classify():

    from blade.data.assets import _skimage_file

    model = EfficientNetLite0()
    load_lite0_imagenet(model)
    model.eval()
    sd = torch.load(lite0_weights_path(), weights_only=True)
    img = torch.from_numpy(_skimage_file("coffee").copy()).permute(2, 0, 1)[None].float()
    x = (F.interpolate(img, size=(224, 224), mode="bilinear") - 127) / 128
    with torch.no_grad():
        f = F.conv2d(model(x)["2"], sd["_conv_head.weight"])
        f = F.batch_norm(f, sd["_bn1.running_mean"], sd["_bn1.running_var"], sd["_bn1.weight"],
                         sd["_bn1.bias"], eps=1e-3)
        logits = F.relu6(f).mean((2, 3)) @ sd["_fc.weight"].T + sd["_fc.bias"]
    assert int(logits.argmax()) == 967  # ImageNet class 967: espresso


def test_missing_torchvision_weights_give_a_clear_error(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailable, match="pretrained=False to train from scratch"):
        build_backbone("resnet18", pretrained=True)
    backbone, _, _ = build_backbone("resnet18", pretrained=False)  # the explicit choice works
    assert backbone.out_channels == 256


@pytest.fixture(scope="module")
def items(synthetic_dir):
    ds = AmodalDataset(os.path.join(synthetic_dir, "train.json"),
                       os.path.join(synthetic_dir, "train"))
    return [ds[0], ds[1]]


def test_training_forward_gives_every_term_and_gradients(items):
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).train()
    terms, weights = model([it["image"] for it in items], items, iteration=1)
    expected = {"vis_proj", "vis_pair", "amo_proj", "amo_pair", "amo_neighbor", "amo_uniform",
                "region", "det_cls", "det_box", "det_ctr"}
    assert set(terms) == set(weights) == expected
    loss = sum(weights[k] * terms[k] for k in terms)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.head.regression_head.controller.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.mask_branch.parameters())


@pytest.mark.parametrize("detach", [True, False], ids=["detached_inputs", "attached_inputs"])
def test_con_isolate_keeps_the_connectivity_gradient_out_of_shared_features(items, detach):
    """``con_isolate``: l_ne and l_un have the same values, and their gradient reaches only the
    controller rows (weight and bias) that make the amodal head's parameters, exactly as much
    as with the paper's routing; with the paper's routing it also reaches the mask branch and
    the controller tower. With m_v attached (``detach_visible_input``, ``detach_visible``
    False) the isolation must hold all the same."""
    grads = {}
    for iso in (False, True):
        torch.manual_seed(0)
        model = BladeModel(preset("smoke", con_isolate=iso, detach_visible_input=detach,
                                  detach_visible=detach)).train()
        terms, _ = model([it["image"] for it in items], items, iteration=1)
        (terms["amo_neighbor"] + terms["amo_uniform"]).backward()
        controller = model.head.regression_head.controller
        rows = slice(model.n_vis, model.n_vis + model.n_amo)
        others = {name: float(p.grad.abs().sum()) for name, p in model.named_parameters()
                  if p.grad is not None and not name.startswith("head.regression_head.controller.")}
        outside = torch.ones(controller.weight.shape[0], dtype=torch.bool)
        outside[rows] = False
        grads[iso] = {
            "values": (float(terms["amo_neighbor"]), float(terms["amo_uniform"])),
            "others": sum(others.values()),
            "mask_branch": sum(v for k, v in others.items() if k.startswith("mask_branch.")),
            "amodal_rows": (controller.weight.grad[rows].clone(), controller.bias.grad[rows].clone()),
            "outside_rows": float(controller.weight.grad[outside].abs().sum()
                                  + controller.bias.grad[outside].abs().sum()),
        }
    paper, isolated = grads[False], grads[True]
    assert paper["values"] == isolated["values"]  # the same m_a, only the gradient is routed
    assert paper["mask_branch"] > 0 and paper["others"] > 0
    assert isolated["others"] == 0 and isolated["outside_rows"] == 0  # nothing else moves
    for a, b in zip(paper["amodal_rows"], isolated["amodal_rows"]):
        assert b.abs().sum() > 0 and torch.allclose(a, b, atol=1e-7)


def test_ablation_configs_change_the_terms(items):
    model = BladeModel(preset("smoke", use_fusion=False, use_neighbor=False)).train()
    terms, _ = model([it["image"] for it in items], items)
    assert "region" not in terms and "amo_neighbor" not in terms and "amo_uniform" in terms


def test_predict_shapes_and_given_boxes(items):
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    img = items[0]["image"]
    out = model.predict([img])[0]
    for key in ("visible", "amodal", "region", "masks"):
        assert out[key].shape == (len(out["boxes"]),) + tuple(img.shape[-2:])
    given = items[0]["visible_boxes"]
    out = model.predict([img], boxes=[given], prompt="detections")[0]
    assert len(out["masks"]) == len(given) and out["masks"].shape[-2:] == img.shape[-2:]
    assert out["matched"].dtype == torch.bool and len(out["matched_iou"]) == len(given)
    # an untrained detector finds nothing: every box falls back to a location inside it
    assert not out["matched"].any() and torch.equal(out["boxes"], given)
    # the box prompt needs no detection: the training rule gives a location to boxes 0 and 2;
    # box 1 is a 2.5-pixel sliver at 128 px (y 81-83.5) between two rows of P3 locations
    # (y = 80, 88): training never makes it positive either, so it takes the fallback
    out = model.predict([img], boxes=[given])[0]
    assert out["matched"].tolist() == [True, False, True] and torch.equal(out["boxes"], given)
    with pytest.raises(ValueError, match="prompt"):
        model.predict([img], boxes=[given], prompt="nearest")
    m = out["masks"]
    assert (m >= 0).all() and (m <= 1).all()
    fused = out["amodal"] * out["region"] + out["visible"] * (1 - out["region"])
    assert torch.allclose(out["masks"], fused)  # Eq. 2


def test_predict_runs_in_eval_mode_and_restores_each_modules_mode(items):
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    img, given = items[0]["image"], [items[0]["visible_boxes"]]
    ref = model.predict([img], boxes=given)[0]["masks"]
    model.train()
    model.mask_branch.eval()  # a mixed state: it must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    out = model.predict([img], boxes=given)[0]["masks"]
    assert torch.equal(out, ref)  # batch norm used its running statistics, not the batch's
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and not model.mask_branch.training


def test_paper_preset_network_trains_a_step_on_cpu(items):
    """The paper's ResNet-50-FPN network (weights not needed here), at a small input size."""
    cfg = preset("paper", pretrained=False, min_size=128, max_size=128)
    assert (cfg.backbone, cfg.batch_size, cfg.iterations, cfg.lr, cfg.lr_steps) == \
        ("resnet50", 6, 60000, 0.01, (40000, 54000))
    model = BladeModel(cfg).train()
    terms, weights = model([it["image"] for it in items], items, iteration=10)
    loss = sum(weights[k] * terms[k] for k in terms)
    assert torch.isfinite(loss)
    loss.backward()


def test_boxinst_configuration_runs_only_the_visible_head(items):
    cfg = preset("smoke", use_amodal=False, use_fusion=False)
    model = BladeModel(cfg).train()
    terms, _ = model([it["image"] for it in items], items)
    assert set(terms) == {"vis_proj", "vis_pair", "det_cls", "det_box", "det_ctr"}
    out = model.predict([items[0]["image"]], boxes=[items[0]["visible_boxes"]])[0]
    assert torch.equal(out["masks"], out["visible"]) and (out["region"] == 0).all()


def test_box_prompt_candidates_are_the_training_positives(items):
    """fcos_candidates(box) = the locations torchvision's FCOS matching makes positive for
    that box when it is the only ground truth (level by size, centre sampling, inside)."""
    model = BladeModel(preset("smoke")).train()
    images_t, targets_t = model.transform([items[0]["image"]],
                                          [{"boxes": items[0]["visible_boxes"],
                                            "labels": items[0]["labels"]}])
    feats = list(model.backbone(images_t.tensors).values())
    head_outputs = model.head(feats)
    anchors = model.anchor_generator(images_t, feats)
    n_per_level = [f.shape[-2] * f.shape[-1] for f in feats]
    boxes = torch.cat([targets_t[0]["boxes"],  # the real boxes, plus boxes for every level
                       torch.tensor([[3.0, 5.0, 20.0, 14.0], [0.0, 0.0, 127.0, 127.0],
                                     [10.0, 10.0, 90.0, 60.0]])])
    cand = fcos_candidates(anchors[0], boxes, n_per_level)
    for j, box in enumerate(boxes):
        model.compute_loss([{"boxes": box[None], "labels": torch.zeros(1, dtype=torch.long)}],
                           head_outputs, anchors, n_per_level)
        assert torch.equal(cand[j], model.head.last_matched_idxs[0] >= 0), j
    # all but the 2.5-pixel sliver (box 1, see test_predict_shapes_and_given_boxes) have some
    assert cand.any(1).tolist() == [True, False, True, True, True, True]


def test_box_prompt_does_not_depend_on_the_score_threshold(items):
    """Box-prompted masks come from the box, not from the detector's surviving detections;
    detection-matched ones change when no detection passes the threshold."""
    torch.manual_seed(0)
    model = BladeModel(preset("smoke")).eval()
    img, given = items[0]["image"], items[0]["visible_boxes"]
    model.score_thresh = 0.0  # every location is a detection (NMS thins them)
    box_low = model.predict([img], boxes=[given], prompt="box")[0]
    # min_iou=0: any surviving detection is taken (an untrained detector's boxes are random)
    det_low = model.predict([img], boxes=[given], prompt="detections", min_iou=0.0)[0]
    model.score_thresh = 1.5  # sqrt(cls x ctr) <= 1: no detection survives
    box_high = model.predict([img], boxes=[given], prompt="box")[0]
    det_high = model.predict([img], boxes=[given], prompt="detections", min_iou=0.0)[0]
    for key in ("masks", "visible", "amodal", "region", "scores", "labels", "matched"):
        assert torch.equal(box_low[key], box_high[key]), key
    assert det_low["matched"].all() and not det_high["matched"].any()
    assert not torch.equal(det_low["masks"], det_high["masks"])
    # one box asked alone gets the same answer as in company (boxes are independent)
    alone = model.predict([img], boxes=[given[1:2]], prompt="box")[0]
    assert torch.allclose(alone["masks"][0], box_high["masks"][1])


def test_box_match_prompt_takes_the_candidate_whose_regressed_box_fits(items):
    """Two candidate locations of one given box [32, 32, 96, 96] (one level, stride 8): location
    0 has the better cls x ctr but regresses a box of another object ([0, 0, 40, 40]); location
    1 regresses the given box itself. ``box`` takes location 0, ``box_match`` location 1; a
    location outside the candidates is never taken, however well its box fits."""
    model = BladeModel(preset("smoke")).eval()
    anchors = torch.tensor([[56.0, 56.0, 64.0, 64.0],   # centre (60, 60): a candidate
                            [64.0, 64.0, 72.0, 72.0],   # centre (68, 68): a candidate
                            [0.0, 0.0, 8.0, 8.0]])     # centre (4, 4): outside the box
    given = torch.tensor([[32.0, 32.0, 96.0, 96.0]])
    regressed = torch.tensor([[0.0, 0.0, 40.0, 40.0], [32.0, 32.0, 96.0, 96.0],
                              [32.0, 32.0, 96.0, 96.0]])
    head_outputs = {
        "cls_logits": torch.tensor([[[4.0], [1.0], [6.0]]]),  # [1, A, 1 class]
        "bbox_ctrness": torch.tensor([[[4.0], [1.0], [6.0]]]),
        "bbox_regression": model.box_coder.encode(anchors, regressed)[None],
    }
    n_per_level = [3]  # a single level: every size range open
    cand = fcos_candidates(anchors, given, n_per_level)
    assert cand.tolist() == [[True, True, False]]
    box = model._prompt_boxes(given, head_outputs, [anchors], 0, n_per_level)
    match = model._prompt_boxes(given, head_outputs, [anchors], 0, n_per_level, match=True)
    assert box["anchor_idx"].tolist() == [0] and match["anchor_idx"].tolist() == [1]
    assert match["matched"].tolist() == [True]


def test_box_match_prompt_predicts_and_ignores_the_score_threshold(items):
    model = BladeModel(preset("smoke")).eval()
    img, given = items[0]["image"], items[0]["visible_boxes"]
    model.score_thresh = 0.0
    low = model.predict([img], boxes=[given], prompt="box_match")[0]
    model.score_thresh = 1.5
    high = model.predict([img], boxes=[given], prompt="box_match")[0]
    assert low["masks"].shape == (len(given), *img.shape[-2:])
    for key in ("masks", "scores", "labels", "matched"):
        assert torch.equal(low[key], high[key]), key


def test_training_targets_carry_objects_for_the_depth_cue(items, monkeypatch):
    """ne_allow="depth" reads each instance's object and each object's image from the targets
    the model builds: one image index per object of the batch, in the batch's order."""
    import blade.model

    seen = {}
    real = blade.model.blade_criterion

    def keep(outputs, targets, cfg, iteration=0):
        seen.update(targets)
        return real(outputs, targets, cfg, iteration)

    monkeypatch.setattr(blade.model, "blade_criterion", keep)
    torch.manual_seed(0)
    model = BladeModel(preset("smoke", ne_allow="depth")).train()
    terms, _ = model([it["image"] for it in items], items, iteration=1)
    counts = [len(it["labels"]) for it in items]
    assert seen["gt_image"].tolist() == [b for b, n in enumerate(counts) for _ in range(n)]
    assert len(seen["gt_index"]) == len(seen["region_masks"])
    assert int(seen["gt_index"].max()) < sum(counts)
    # each instance's colour similarity is its own image's: equal exactly for instances whose
    # object lies in the same image, different across images
    image = seen["gt_image"][seen["gt_index"]]
    sim = seen["color_similarity"]
    assert len(set(image.tolist())) == 2
    for k in range(len(image)):
        for j in range(len(image)):
            assert torch.equal(sim[k], sim[j]) == bool(image[k] == image[j])
    assert torch.isfinite(terms["amo_neighbor"])


def _select_positives_loop(matched, score, topk_per_image):
    """The per-image, per-instance loop ``select_positives`` replaced (BoxInst's rule as it was
    written before issue 15), kept here as its specification."""
    img_idx, anchor_idx, gt = [], [], []
    for b, m in enumerate(matched):
        pos = torch.nonzero(m >= 0).flatten()
        if len(pos):
            gts = m[pos]
            per_gt = max(topk_per_image // len(torch.unique(gts)), 1)
            for g in torch.unique(gts):
                sel = torch.nonzero(gts == g).flatten()
                sel = sel[score[b, pos][sel].topk(min(per_gt, len(sel))).indices]
                anchor_idx.append(pos[sel])
                img_idx.append(torch.full_like(sel, b))
                gt.append(g.expand(len(sel)))
    cat = (lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.long))
    return cat(img_idx), cat(anchor_idx), cat(gt)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(0, 5), st.integers(1, 9),
       st.integers(0, 10_000))
def test_select_positives_equals_the_per_instance_loop(B, A, n_gt, topk, seed):
    """Batched selection = the loop it replaced, on random assignments (some images with no
    positive, instances with fewer locations than their share) and distinct random scores."""
    from blade.model import select_positives

    g = torch.Generator().manual_seed(seed)
    matched = torch.randint(-1, n_gt, (B, A), generator=g) if n_gt else -torch.ones(B, A).long()
    score = torch.randperm(B * A, generator=g).float().view(B, A) / (B * A)  # no ties
    got = select_positives(matched, score, topk)
    want = _select_positives_loop(matched, score, topk)
    for a, b in zip(got, want):
        assert torch.equal(a, b), (got, want)


def test_select_positives_by_hand():
    """Two images; image 0: instance 1 at locations 0, 2, 3 (scores .1, .9, .5), instance 0 at
    location 4 (.3); image 1: nothing. topk 4 over 2 instances: 2 each, so instance 0 keeps
    location 4, instance 1 keeps 2 and 3 (best first); ties go to the lower location."""
    from blade.model import select_positives

    matched = torch.tensor([[1, -1, 1, 1, 0], [-1, -1, -1, -1, -1]])
    score = torch.tensor([[.1, .8, .9, .5, .3], [.9, .9, .9, .9, .9]])
    img, loc, gt = select_positives(matched, score, 4)
    assert img.tolist() == [0, 0, 0] and loc.tolist() == [4, 2, 3] and gt.tolist() == [0, 1, 1]
    tie = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5], [0.0] * 5])
    assert select_positives(matched, tie, 4)[1].tolist() == [4, 0, 2]
    # instance indices beyond the number of locations (a review's counterexamples), and the
    # batch offsets the model adds (image 1's first instance is the batch's 5th)
    for m in ([[1]], [[3], [0]], [[0, 4, -1], [1, -1, 0]]):
        m = torch.tensor(m)
        s = torch.arange(m.numel(), dtype=torch.float32).view(m.shape)
        got, want = select_positives(m, s, 4), _select_positives_loop(m, s, 4)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), (m, got, want)
    m = torch.tensor([[0, 4, -1], [1, -1, 0]])
    img, loc, gt = select_positives(m, torch.ones(2, 3), 4, first_gt=[0, 5], max_gt=5)
    assert img.tolist() == [0, 0, 1, 1] and loc.tolist() == [0, 1, 2, 0]
    assert gt.tolist() == [0, 4, 5, 6]


def _random_frozen_pair(eps=1e-3):
    from torchvision.ops.misc import FrozenBatchNorm2d

    from blade.backbones import FrozenBN
    ours, theirs = FrozenBN(6, eps=eps), FrozenBatchNorm2d(6, eps=eps)
    g = torch.Generator().manual_seed(3)
    for name in ("weight", "bias", "running_mean"):
        value = torch.randn(6, generator=g)
        getattr(ours, name).copy_(value)
        getattr(theirs, name).copy_(value)
    var = torch.rand(6, generator=g) + 0.05
    ours.running_var.copy_(var)
    theirs.running_var.copy_(var)
    return ours, theirs


def test_frozen_bn_is_torchvisions_to_the_bit_and_keeps_the_input_dtype():
    """FrozenBN (issue 15) gives torchvision's FrozenBatchNorm2d's float32 numbers exactly,
    with the same state dict (checkpoints load either way); a float16 input stays float16
    (torchvision's promotes it to float32, which costs a cast before every conv under AMP)."""
    ours, theirs = _random_frozen_pair()
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    assert torch.equal(ours(x), theirs(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    y = ours(x.half())
    assert y.dtype == torch.float16 and theirs(x.half()).dtype == torch.float32
    assert torch.allclose(y.float(), theirs(x.half()), atol=1e-2, rtol=1e-2)
    ours(x).sum().backward()  # the input's gradient flows; the buffers get none
    assert x.grad is not None and not ours.weight.requires_grad
    # the kit's pretrained backbones use it
    body, _, _ = build_backbone("efficientnet_lite0", pretrained=True, load_weights=False)
    assert sum(type(m).__name__ == "FrozenBN" for m in body.modules()) == 48  # stem + 2 + 15 x 3


def test_frozen_bn_recomputes_its_affine_when_a_buffer_changes():
    """The cached scale/bias follow load_state_dict, in-place writes and new tensors."""
    ours, theirs = _random_frozen_pair()
    x = torch.randn(1, 6, 3, 3)
    ours(x)  # fills the cache
    state = {k: v * 1.5 + 0.25 for k, v in theirs.state_dict().items()}
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    assert torch.equal(ours(x), theirs(x))
    for m in (ours, theirs):
        m.running_var.mul_(3.0)  # in place
    assert torch.equal(ours(x), theirs(x))
    ours.bias = theirs.bias = torch.full((6,), 0.5)  # a new tensor (as .to() makes)
    assert torch.equal(ours(x), theirs(x))
    ours_d, theirs_d = ours.double(), theirs.double()
    assert torch.equal(ours_d(x.double()), theirs_d(x.double()))
    with torch.no_grad():  # through .data the version counter does not move: reset() it
        ours.running_mean.data.add_(1.0)
        theirs.running_mean.data.add_(1.0)
    ours.reset()
    assert torch.equal(ours(x.double()), theirs(x.double()))


def test_frozen_bn_caches_nothing_under_inference_mode():
    """Under torch.inference_mode FrozenBN computes its affine without caching it, so a later
    training forward can still be differentiated, and buffers made under inference mode (no
    version counter) work too."""
    ours, theirs = _random_frozen_pair()
    x = torch.randn(1, 6, 3, 3)
    with torch.inference_mode():
        assert torch.equal(ours(x), theirs(x))
    assert "_affine_cache" not in ours.__dict__
    y = torch.randn(1, 6, 3, 3, requires_grad=True)
    ours(y).sum().backward()  # would fail on an inference-mode cache
    assert y.grad is not None
    with torch.inference_mode():
        inf = _random_frozen_pair()[0].to(torch.float64)  # buffers are inference tensors
    assert torch.equal(inf(x.double()), theirs.double()(x.double()))


def _fcos_targets(g, n_images, size):
    targets = []
    for b in range(n_images):
        k = int(torch.randint(0, 6, (), generator=g))
        xy = torch.rand(k, 2, generator=g) * (size - 8)
        wh = torch.rand(k, 2, generator=g) * size * 0.8 + 0.5
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        if b % 2:
            boxes = boxes.round()  # integer boxes: ties in the distances
        if k > 1 and b % 3 == 0:
            boxes[1] = boxes[0]  # the same box twice: a tie in the area rule
        targets.append({"boxes": boxes, "labels": torch.zeros(k, dtype=torch.long)})
    return targets


def test_batched_fcos_matching_equals_torchvisions_per_image_loop():
    """BladeModel.compute_loss assigns locations with fcos_match, one pass for the batch:
    the same matches and the same detection losses as torchvision's FCOS.compute_loss
    (image by image), over random boxes with ties, duplicates and images without boxes."""
    from torchvision.models.detection.fcos import FCOS

    torch.manual_seed(0)
    model = BladeModel(preset("smoke"), load_weights=False).train()
    images_t, _ = model.transform([torch.rand(3, 128, 128) for _ in range(3)], None)
    feats = list(model.backbone(images_t.tensors).values())
    head_outputs = model.head(feats)
    anchors = model.anchor_generator(images_t, feats)
    n_per_level = [f.shape[-2] * f.shape[-1] for f in feats]
    g = torch.Generator().manual_seed(1)
    matched_any = 0
    for trial in range(60):
        targets = _fcos_targets(g, 3, 128)
        if trial == 0:
            for t in targets:  # a batch without any box
                t["boxes"], t["labels"] = t["boxes"][:0], t["labels"][:0]
        ref = FCOS.compute_loss(model, targets, head_outputs, anchors, n_per_level)
        ref_idx = model.head.last_matched_idxs
        out = model.compute_loss(targets, head_outputs, anchors, n_per_level)
        for a, b in zip(ref_idx, model.head.last_matched_idxs):
            assert a.dtype == b.dtype and torch.equal(a, b), trial
            matched_any += int((a >= 0).sum())
        for k in ref:
            assert torch.equal(ref[k], out[k]), (trial, k)
    assert matched_any > 100  # the trials did exercise matches, not only -1


def test_cached_anchors_equal_torchvisions_for_every_shape():
    """The model's anchor generator returns torchvision's anchors, reused for a padded batch
    shape seen before and built anew for another shape, batch size or dtype."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    model = BladeModel(preset("smoke"), load_weights=False)
    gen = model.anchor_generator
    ref = AnchorGenerator(gen.sizes, gen.aspect_ratios)
    first = None
    for shape in ((2, 3, 128, 128), (2, 3, 128, 256), (3, 3, 128, 128), (2, 3, 128, 128)):
        for dtype in (torch.float32, torch.float64):
            images = ImageList(torch.zeros(shape), [tuple(shape[-2:])] * shape[0])
            feats = [torch.zeros(shape[0], 4, shape[2] // s, shape[3] // s, dtype=dtype)
                     for s in (8, 16, 32, 64, 128)]
            got, want = gen(images, feats), ref(images, feats)
            assert len(got) == shape[0]
            assert all(g.dtype == dtype and torch.equal(g, w) for g, w in zip(got, want))
            if shape == (2, 3, 128, 128) and dtype == torch.float32:
                if first is None:
                    first = got
                else:  # the same shape again: the same tensors, not new ones
                    assert all(a is b for a, b in zip(first, got))
    gen.MAX_SHAPES = 2  # least recently used shapes go first
    gen._anchor_cache.clear()
    for w in (128, 256, 128, 384):  # 128 used again: 256 is the least recently used
        images = ImageList(torch.zeros(1, 3, 128, w), [(128, w)])
        gen(images, [torch.zeros(1, 4, 128 // s, w // s) for s in (8, 16, 32, 64, 128)])
    assert [k[0][-1] for k in gen._anchor_cache] == [128, 384]


def test_frozen_bn_traces_under_torch_compile():
    """Compiled (dynamo + AOT autograd, no code generation: the ``aot_eager`` backend), FrozenBN
    computes its affine inside the graph instead of through its Python-side cache, with the
    same values and the input's gradient."""
    ours, theirs = _random_frozen_pair()
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    y = compiled(x)
    assert torch.allclose(y, theirs(x), atol=1e-6) and "_affine_cache" not in ours.__dict__
    y.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("min_size", [(800,), (640, 672, 704, 736, 768, 800)])
@pytest.mark.parametrize("train", [True, False])
def test_batched_transform_equals_torchvisions_image_by_image(min_size, train):
    """The model's transform (one batch per image shape and drawn size) gives torchvision's
    GeneralizedRCNNTransform's padded batch, image sizes and resized boxes to the bit, and
    leaves the random state where torchvision leaves it (one draw per image), for one shape,
    shapes whose resized width needs padding (256x300 -> 800x937 -> 960 at 800 px), mixed
    shapes, with targets (an image without boxes among them) and without."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from blade.model import BatchedTransform
    kw = dict(min_size=min_size, max_size=1333, image_mean=[0.485, 0.456, 0.406],
              image_std=[0.229, 0.224, 0.225])
    for shapes in ([(3, 256, 256)] * 3, [(3, 250, 370)] * 2, [(3, 256, 300)] * 2,
                   [(3, 256, 256), (3, 200, 300), (3, 256, 256)]):
        g = torch.Generator().manual_seed(len(shapes))
        images = [torch.rand(s, generator=g) for s in shapes]
        targets = [{"boxes": torch.rand(k, 4, generator=g) * 100
                    + torch.tensor([0.0, 0.0, 100.0, 100.0]),
                    "labels": torch.zeros(k, dtype=torch.long)} for k in (2, 0, 3)[:len(shapes)]]
        for tg in (targets, None):
            out = []
            for cls in (GeneralizedRCNNTransform, BatchedTransform):
                t = cls(**kw).train(train)
                torch.manual_seed(0)
                images_t, tg_t = t(images, tg)
                out.append((images_t, tg_t, torch.get_rng_state()))
            (a, ta, ra), (b, tb, rb) = out
            assert torch.equal(a.tensors, b.tensors) and a.image_sizes == b.image_sizes
            assert torch.equal(ra, rb)
            if tg is not None:
                assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))
                assert all(x["labels"] is y["labels"] for x, y in zip(ta, tb))
                assert tg[0]["boxes"] is targets[0]["boxes"]  # the caller's dicts are kept
            if shapes[0] == (3, 256, 300) and len(min_size) == 1:
                assert b.tensors.shape[-1] == 960 and b.image_sizes[0][1] == 937  # padded


def test_batch_box_scaling_equals_image_by_image():
    """scale_batch_boxes: one scaling when every image was resized alike, per image
    otherwise; either way the numbers of scale_boxes image by image, in image order."""
    from blade.model import scale_batch_boxes, scale_boxes

    g = torch.Generator().manual_seed(0)
    boxes = [torch.rand(k, 4, generator=g) * 300 for k in (3, 0, 2)]
    for factors in ([(800 / 256, 800 / 256)] * 3, [(3.125, 3.1171875), (2.0, 2.0), (1.5, 1.25)]):
        want = torch.cat([scale_boxes(b, sx, sy) for b, (sx, sy) in zip(boxes, factors)])
        assert torch.equal(scale_batch_boxes(boxes, factors), want)
