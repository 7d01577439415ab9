"""Bad input (issue 16): never a deep crash, never silent corruption, never a user's file lost.

Table-driven: each row is one bad input, run through the loader (``AmodalDataset``, in train and
eval mode) or a command line (in-process ``main(argv)`` where the CLI adds nothing, a memory-
limited subprocess where it is the point). For every row: a non-zero exit (or the kit's error
type), no traceback, exactly one ``error:`` line naming the file and the record, the user's
files unchanged; or, where the input is acceptable (a 16-bit PNG), the correct result.
``test_the_table_holds_at_least_120_bad_inputs`` counts the rows.
"""

import hashlib
import json
import os
import pickle
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import make_fixtures as F
from blade.data import AmodalDataset, AnnotationError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_LIMIT = 4 * 2**30  # address space of every CLI subprocess: a runaway allocation fails
NAN, INF = float("nan"), float("inf")


# -- helpers -------------------------------------------------------------------------------------
def digest(path) -> dict:
    """{relative path: sha256} of a file or of every file under a folder."""
    path = str(path)
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def one_error_line(code, err: str, *patterns) -> str:
    """The checks every bad input must pass: non-zero exit, no traceback, exactly one line
    ``error: ...``, matching ``patterns``. Returns that line."""
    assert code not in (0, None), f"exit status {code}: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if re.search(r"\berror\b:", ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    for p in patterns:
        assert re.search(p, lines[0]), (p, lines[0])
    return lines[0]


def in_process(main, argv, capsys):
    """Run a CLI's ``main(argv)`` here: (exit status, stderr) as a shell would see them."""
    capsys.readouterr()
    code, message = 0, ""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
        if isinstance(code, str):  # the interpreter prints the message and exits with 1
            code, message = 1, e.code + "\n"
    return code, capsys.readouterr().err + message


def _limits(fsize=None):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if fsize is not None:  # a "full disk": writes past fsize bytes fail with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return apply


def subprocess_cli(module, argv, cwd, env=None, fsize=None, timeout=300):
    """``python -m module argv`` under the memory limit: (exit status, stderr, stdout)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, BLADE_DEBUG="0",
                    **(env or {}))
    res = subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=str(cwd),
                         env=full_env, capture_output=True, text=True, timeout=timeout,
                         preexec_fn=_limits(fsize))
    return res.returncode, res.stderr, res.stdout


def write_case(folder, schema="kins2020", edit=None, text=None):
    """A copy of a fixture (annotation JSON + both images) in ``folder``, edited."""
    os.makedirs(folder, exist_ok=True)
    for name in ("img1.png", "img2.png"):
        shutil.copy(os.path.join(F.HERE, name), os.path.join(folder, name))
    path = os.path.join(str(folder), f"{schema}.json")
    if text is not None:
        with open(path, "wb") as f:
            f.write(text)
        return path
    data = json.load(open(os.path.join(F.HERE, f"{schema}.json")))
    if edit is not None:
        edit(data)
    with open(path, "w") as f:
        json.dump(data, f)  # NaN and Infinity are written as JSON's NaN / Infinity literals
    return path


def ann(d, i=0):
    return d["annotations"][i]


def setkey(rec, key, value):
    rec[key] = value


def png_header_only(width, height) -> bytes:
    """A PNG that claims ``width x height`` pixels and holds none (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


COUNTED = []  # every bad-input table below, for the count


def table(rows):
    COUNTED.append(rows)
    return rows


# -- the loader: annotation files ------------------------------------------------------------
def _rle_of_ann(d, i, key):
    return d["annotations"][i][key]


LOADER = table([
    # NaN / infinity anywhere in the numbers
    ("nan_amodal_polygon", "kins2020", lambda d: ann(d)["a_segm"][0].__setitem__(2, NAN),
     r"annotation id 1, key 'amodal mask': polygon has a non-finite"),
    ("inf_amodal_polygon", "kins2020", lambda d: ann(d)["a_segm"][0].__setitem__(1, INF),
     r"annotation id 1, key 'amodal mask': polygon has a non-finite"),
    ("nan_visible_polygon", "kins2020", lambda d: ann(d, 1)["i_segm"][0].__setitem__(0, NAN),
     r"annotation id 2, key 'visible mask': polygon has a non-finite"),
    ("nan_kins2019_polygon", "kins2019", lambda d: ann(d)["segmentation"][0].__setitem__(3, NAN),
     r"annotation id 1, key 'amodal mask': polygon has a non-finite"),
    ("nan_cocoa_polygon", "cocoa",
     lambda d: ann(d)["regions"][0]["segmentation"].__setitem__(0, NAN),
     r"annotation id 1:0, key 'amodal mask': polygon has a non-finite"),
    ("nan_bbox", "kins2020", lambda d: ann(d)["a_bbox"].__setitem__(0, NAN),
     r"annotation id 1, key 'a_bbox': box .* non-finite"),
    ("inf_bbox_width", "kins2020", lambda d: ann(d)["a_bbox"].__setitem__(2, INF),
     r"annotation id 1, key 'a_bbox': box .* non-finite"),
    ("nan_i_bbox", "kins2020", lambda d: ann(d, 2)["i_bbox"].__setitem__(3, NAN),
     r"annotation id 3, key 'i_bbox': box .* non-finite"),
    ("minus_inf_inmodal_bbox", "kins2019", lambda d: ann(d)["inmodal_bbox"].__setitem__(1, -INF),
     r"annotation id 1, key 'inmodal_bbox': box .* non-finite"),
    ("nan_cocoa_cls_bbox", "cocoa_cls", lambda d: ann(d)["bbox"].__setitem__(1, NAN),
     r"annotation id 1, key 'bbox': box .* non-finite"),
    ("nan_occlude_rate", "cocoa_cls", lambda d: setkey(ann(d, 1), "occlude_rate", NAN),
     r"annotation id 2, key 'occlude_rate': must be a number in \[0, 1\]"),
    ("inf_occlude_rate", "cocoa_cls", lambda d: setkey(ann(d, 1), "occlude_rate", INF),
     r"annotation id 2, key 'occlude_rate'"),
    ("occlude_rate_over_one", "cocoa_cls", lambda d: setkey(ann(d), "occlude_rate", 1.5),
     r"annotation id 1, key 'occlude_rate'.*1.5"),
    ("negative_occlude_rate", "cocoa_cls", lambda d: setkey(ann(d), "occlude_rate", -0.1),
     r"annotation id 1, key 'occlude_rate'"),
    ("string_occlude_rate", "cocoa_cls", lambda d: setkey(ann(d), "occlude_rate", "abc"),
     r"annotation id 1, key 'occlude_rate'.*'abc'"),
    ("nan_cocoa_occlude_rate", "cocoa",
     lambda d: setkey(ann(d)["regions"][1], "occlude_rate", NAN),
     r"annotation id 1:1, key 'occlude_rate'"),
    ("nan_image_height", "kins2020", lambda d: setkey(d["images"][0], "height", NAN),
     r"image id 1, key 'height': must be a positive whole number"),
    ("inf_image_width", "kins2020", lambda d: setkey(d["images"][1], "width", INF),
     r"image id 2, key 'width': must be a positive whole number"),
    # malformed records
    ("string_image_height", "kins2020", lambda d: setkey(d["images"][0], "height", "abc"),
     r"image id 1, key 'height'.*'abc'"),
    ("zero_image_width", "kins2020", lambda d: setkey(d["images"][0], "width", 0),
     r"image id 1, key 'width'"),
    ("negative_image_width", "kins2020", lambda d: setkey(d["images"][0], "width", -48),
     r"image id 1, key 'width'"),
    ("fractional_image_width", "kins2020", lambda d: setkey(d["images"][0], "width", 48.5),
     r"image id 1, key 'width'.*48.5"),
    ("boolean_image_height", "kins2020", lambda d: setkey(d["images"][0], "height", True),
     r"image id 1, key 'height'"),
    ("huge_image_size", "kins2020", lambda d: d["images"][0].update(width=100000, height=100000),
     r"image id 1: 100000x100000 pixels is over the decompression-bomb limit"),
    ("null_file_name", "kins2020", lambda d: setkey(d["images"][0], "file_name", None),
     r"image id 1, key 'file_name': must be a non-empty path"),
    ("empty_file_name", "kins2020", lambda d: setkey(d["images"][1], "file_name", ""),
     r"image id 2, key 'file_name'"),
    ("numeric_file_name", "kins2020", lambda d: setkey(d["images"][1], "file_name", 7),
     r"image id 2, key 'file_name'"),
    ("dotdot_file_name", "kins2020", lambda d: setkey(d["images"][0], "file_name", "../img1.png"),
     r"image id 1, key 'file_name': '../img1.png' points outside the image folder"),
    ("nested_dotdot_file_name", "kins2020",
     lambda d: setkey(d["images"][0], "file_name", "a/../../img1.png"),
     r"image id 1, key 'file_name'.*outside"),
    ("absolute_file_name", "kins2020",
     lambda d: setkey(d["images"][0], "file_name", "/etc/passwd"),
     r"image id 1, key 'file_name': '/etc/passwd' points outside"),
    ("image_record_is_a_string", "kins2020", lambda d: d["images"].__setitem__(0, "img1.png"),
     r"image record #0 must be an object, got str"),
    ("image_id_is_null", "kins2020", lambda d: setkey(d["images"][0], "id", None),
     r"image record #0, key 'id': must be an integer or a string"),
    ("image_id_is_a_list", "kins2020", lambda d: setkey(d["images"][0], "id", [1]),
     r"image record #0, key 'id'"),
    ("bg_level_is_a_string", "cocoa_cls", lambda d: setkey(d["images"][0], "bg_level", "x"),
     r"image id 1, key 'bg_level'"),
    ("annotation_is_a_string", "kins2020", lambda d: d["annotations"].insert(1, "car"),
     r"annotation record #1 must be an object, got str"),
    ("annotation_is_null", "kins2020", lambda d: d["annotations"].append(None),
     r"annotation record #4 must be an object, got NoneType"),
    ("annotation_id_is_null", "kins2020", lambda d: setkey(ann(d, 1), "id", None),
     r"annotation record #1, key 'id'"),
    ("null_category_id", "kins2020", lambda d: setkey(ann(d), "category_id", None),
     r"annotation id 1, key 'category_id': must be an integer, got None"),
    ("string_category_id", "cocoa_cls", lambda d: setkey(ann(d), "category_id", "car"),
     r"annotation id 1, key 'category_id': must be an integer, got 'car'"),
    ("null_image_id", "kins2020", lambda d: setkey(ann(d, 2), "image_id", None),
     r"annotation id 3, key 'image_id'"),
    ("list_image_id", "kins2019", lambda d: setkey(ann(d), "image_id", [1]),
     r"annotation id 1, key 'image_id'"),
    ("polygon_is_a_string", "kins2020", lambda d: setkey(ann(d), "a_segm", "1,2,3,4,5,6"),
     r"annotation id 1, key 'amodal mask': segmentation must be a polygon list or an RLE"),
    ("polygon_of_strings", "kins2020",
     lambda d: setkey(ann(d), "a_segm", [[str(v) for v in ann(d)["a_segm"][0]]]),
     r"annotation id 1, key 'amodal mask': polygon coordinates must be numbers"),
    ("polygon_with_null", "kins2020", lambda d: ann(d)["i_segm"][0].__setitem__(4, None),
     r"annotation id 1, key 'visible mask': polygon coordinates must be numbers, got None"),
    ("polygon_nested_too_deep", "kins2020", lambda d: setkey(ann(d), "a_segm", [[[24, 10]]]),
     r"annotation id 1, key 'amodal mask': polygon coordinates must be numbers"),
    ("polygon_list_with_a_number", "kins2020",
     lambda d: setkey(ann(d), "a_segm", [ann(d)["a_segm"][0], 5]),
     r"annotation id 1, key 'amodal mask': a polygon must be a list"),
    ("polygon_odd_length", "kins2020", lambda d: ann(d)["a_segm"][0].append(3.0),
     r"annotation id 1, key 'amodal mask': polygon has an odd number"),
    ("bbox_is_a_string", "kins2020", lambda d: setkey(ann(d), "a_bbox", "abc"),
     r"annotation id 1, key 'a_bbox': box must be 4 numbers"),
    ("bbox_three_numbers", "kins2020", lambda d: setkey(ann(d), "a_bbox", [1, 2, 3]),
     r"annotation id 1, key 'a_bbox': box must be 4 numbers"),
    ("bbox_with_a_string", "kins2020", lambda d: ann(d)["i_bbox"].__setitem__(0, "24"),
     r"annotation id 1, key 'i_bbox': box must be 4 numbers"),
    ("bbox_is_null", "kins2019", lambda d: setkey(ann(d), "bbox", None),
     r"annotation id 1, key 'bbox': box must be 4 numbers"),
    # RLE
    ("rle_size_is_a_string", "cocoa_cls", lambda d: setkey(ann(d)["visible_mask"], "size", "abc"),
     r"annotation id 1, key 'visible mask': RLE 'size' must be \[height, width\]"),
    ("rle_size_one_number", "cocoa_cls", lambda d: setkey(ann(d)["visible_mask"], "size", [40]),
     r"annotation id 1, key 'visible mask': RLE 'size'"),
    ("rle_size_strings", "cocoa_cls",
     lambda d: setkey(ann(d)["visible_mask"], "size", ["40", "48"]),
     r"annotation id 1, key 'visible mask': RLE 'size'"),
    ("rle_counts_garbage", "cocoa_cls",
     lambda d: setkey(ann(d)["visible_mask"], "counts", "~~~garbage~~~"),
     r"annotation id 1, key 'visible mask': RLE counts is not a COCO compressed RLE"),
    ("rle_counts_int", "cocoa_cls", lambda d: setkey(ann(d)["visible_mask"], "counts", 5),
     r"annotation id 1, key 'visible mask': RLE 'counts' must be a list .* got int"),
    ("rle_counts_non_ascii", "cocoa_cls",
     lambda d: setkey(ann(d)["visible_mask"], "counts", "Zn0d0\u00e9\u00e9"),
     r"annotation id 1, key 'visible mask': RLE counts string has non-ASCII"),
    ("rle_counts_wrong_total", "cocoa_cls", lambda d: setkey(ann(d)["visible_mask"], "counts", "0"),
     r"annotation id 1, key 'visible mask': compressed RLE counts sum to 0, expected 1920"),
    ("rle_counts_cut_off", "cocoa_cls",
     lambda d: setkey(ann(d)["visible_mask"], "counts", ann(d)["visible_mask"]["counts"] + "P"),
     r"annotation id 1, key 'visible mask': RLE counts string is cut off"),
    ("rle_counts_too_large", "cocoa_cls",
     lambda d: setkey(ann(d)["visible_mask"], "counts", "``````````1"),
     r"annotation id 1, key 'visible mask': RLE counts string holds a number too large"),
    ("rle_invisible_garbage", "cocoa_cls",
     lambda d: setkey(ann(d, 1)["invisible_mask"], "counts", "\x7f\x7f"),
     r"annotation id 2, key 'invisible mask': RLE counts"),
    ("uncompressed_rle_negative", "cocoa_cls",
     lambda d: setkey(ann(d), "visible_mask", {"size": [40, 48], "counts": [1921, -1]}),
     r"annotation id 1, key 'visible mask': uncompressed RLE has a negative run"),
    ("uncompressed_rle_strings", "cocoa_cls",
     lambda d: setkey(ann(d), "visible_mask", {"size": [40, 48], "counts": ["1920"]}),
     r"annotation id 1, key 'visible mask': uncompressed RLE counts must be integers"),
    ("uncompressed_rle_wrong_sum", "cocoa_cls",
     lambda d: setkey(ann(d), "visible_mask", {"size": [40, 48], "counts": [100, 5]}),
     r"annotation id 1, key 'visible mask': uncompressed RLE counts sum to 105"),
    ("rle_without_counts", "cocoa_cls", lambda d: setkey(ann(d), "visible_mask", {"size": [40, 48]}),
     r"annotation id 1, key 'visible mask': RLE must have 'size' and 'counts'"),
    ("visible_mask_is_a_string", "cocoa_cls", lambda d: setkey(ann(d), "visible_mask", "mask"),
     r"annotation id 1, key 'visible mask': segmentation must be"),
    ("kins2019_inmodal_rle_garbage", "kins2019",
     lambda d: setkey(ann(d, 1)["inmodal_seg"], "counts", "!!"),
     r"annotation id 2, key 'visible mask': RLE counts"),
    # duplicate ids: ground truth would move silently
    ("duplicate_image_id", "kins2020", lambda d: setkey(d["images"][1], "id", 1),
     r"image id 1: appears twice in 'images' \(file names 'img1.png' and 'img2.png'\)"),
    ("duplicate_category_id", "kins2020", lambda d: setkey(d["categories"][1], "id", 1),
     r"category id 1 appears twice in 'categories' \('cyclist' and 'pedestrian'\)"),
    ("duplicate_annotation_id", "kins2020", lambda d: setkey(ann(d, 3), "id", 2),
     r"annotation id 2: the annotation id appears twice"),
    ("duplicate_cocoa_image_record", "cocoa", lambda d: d["annotations"].append(ann(d)),
     r"annotation id 1:0: the annotation id appears twice"),
    # categories
    ("category_is_a_string", "kins2020", lambda d: d["categories"].__setitem__(0, "cyclist"),
     r"category record #0 must be an object"),
    ("category_id_is_null", "kins2020", lambda d: setkey(d["categories"][0], "id", None),
     r"category record #0, key 'id': must be an integer"),
    ("category_name_is_null", "kins2020", lambda d: setkey(d["categories"][0], "name", None),
     r"category id 1, key 'name'"),
    ("categories_missing", "kins2020", lambda d: d.pop("categories"),
     r"missing 'categories' list"),
    # COCOA's per-image records
    ("cocoa_regions_is_a_string", "cocoa", lambda d: setkey(ann(d), "regions", "none"),
     r"annotation id 101, key 'regions': must be a list"),
    ("cocoa_region_is_a_number", "cocoa", lambda d: ann(d)["regions"].__setitem__(0, 3),
     r"annotation id 1:0 \(region 0 of image 1\) must be an object"),
    # the file itself
    ("annotations_not_a_list", "kins2020", lambda d: setkey(d, "annotations", {}),
     r"expected a COCO-style object"),
    ("images_not_a_list", "kins2020", lambda d: setkey(d, "images", "img1.png"),
     r"expected a COCO-style object"),
])

RAW_FILES = table([
    ("binary_garbage", b"\x89\xff\x00\x13garbage", r"not a text \(UTF-8 JSON\) file"),
    ("empty_file", b"", r"not valid JSON"),
    ("top_level_list", b"[1, 2, 3]", r"expected a COCO-style object"),
    ("truncated_json", b'{"images": [{"id": 1', r"not valid JSON .*line 1"),
])


@pytest.mark.parametrize("name, schema, edit, message", LOADER, ids=[r[0] for r in LOADER])
def test_annotation_errors_name_file_record_and_key(tmp_path, name, schema, edit, message):
    path = write_case(tmp_path, schema, edit)
    for mode in ("train", "eval"):  # validated once, at load, in every mode
        with pytest.raises(AnnotationError) as e:
            AmodalDataset(path, str(tmp_path), mode=mode)
        text = str(e.value)
        assert text.startswith(path + ": ") and "\n" not in text, text
        assert re.search(message, text), (message, text)


@pytest.mark.parametrize("name, content, message", RAW_FILES, ids=[r[0] for r in RAW_FILES])
def test_unreadable_annotation_files(tmp_path, name, content, message):
    path = write_case(tmp_path, text=content)
    with pytest.raises(AnnotationError, match=re.escape(path) + ": " + message):
        AmodalDataset(path, str(tmp_path))


def test_annotation_file_that_is_a_folder(tmp_path):
    with pytest.raises(AnnotationError, match="is a folder, not an annotation file"):
        AmodalDataset(str(tmp_path), str(tmp_path))


def test_outside_file_names_are_read_only_when_allowed(tmp_path):
    images = tmp_path / "images"
    path = write_case(images, "kins2020",
                      lambda d: setkey(d["images"][0], "file_name", "../outside.png"))
    shutil.copy(os.path.join(F.HERE, "img1.png"), tmp_path / "outside.png")
    with pytest.raises(AnnotationError, match="outside the image folder"):
        AmodalDataset(path, str(images))
    ds = AmodalDataset(path, str(images), allow_outside_root=True)
    assert ds[0]["image"].shape == (3, F.H, F.W)


def test_valid_files_still_load_unchanged(fixtures_dir):
    """The checks reject nothing the fixtures hold (every schema, both modes)."""
    for schema in ("kins2019", "kins2020", "cocoa_cls", "cocoa"):
        for mode in ("train", "eval"):
            ds = AmodalDataset(os.path.join(fixtures_dir, f"{schema}.json"), fixtures_dir,
                               mode=mode)
            assert len(ds) == 2 and ds[1]["labels"].numel() >= 1


# -- the loader: image files -----------------------------------------------------------------
def _grey16():
    return (np.arange(F.H * F.W, dtype=np.uint32).reshape(F.H, F.W) * 34).astype(np.uint16)


def _save(array_or_image, path, **kw):
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(
        array_or_image)
    im.save(path, **kw)


def _rgb_fixture():
    return np.asarray(Image.open(os.path.join(F.HERE, "img1.png")).convert("RGB"))


ACCEPTED_IMAGES = table([
    # name, file name, writer(path), expected uint8 [H,W,3] (None: only the shape is checked)
    ("png_16bit_grey", "img1.png", lambda p: _save(_grey16(), p),
     lambda: np.repeat(np.round(_grey16() / 257.0).astype(np.uint8)[..., None], 3, 2)),
    ("tiff_16bit_grey", "img1.tif", lambda p: _save(_grey16(), p),
     lambda: np.repeat(np.round(_grey16() / 257.0).astype(np.uint8)[..., None], 3, 2)),
    ("png_palette", "img1.png", lambda p: _save(Image.fromarray(_rgb_fixture()).quantize(16), p),
     lambda: np.asarray(Image.fromarray(_rgb_fixture()).quantize(16).convert("RGB"))),
    ("png_greyscale", "img1.png", lambda p: _save(Image.fromarray(_rgb_fixture()).convert("L"), p),
     lambda: np.repeat(np.asarray(Image.fromarray(_rgb_fixture()).convert("L"))[..., None], 3, 2)),
    ("png_rgba", "img1.png",
     lambda p: _save(np.dstack([_rgb_fixture(), np.full((F.H, F.W), 7, np.uint8)]), p),
     _rgb_fixture),
    ("png_grey_alpha", "img1.png", lambda p: _save(Image.fromarray(_rgb_fixture()).convert("LA"), p),
     lambda: np.repeat(np.asarray(Image.fromarray(_rgb_fixture()).convert("L"))[..., None], 3, 2)),
    ("png_1bit", "img1.png", lambda p: _save(Image.fromarray(_rgb_fixture()).convert("1"), p),
     lambda: np.asarray(Image.fromarray(_rgb_fixture()).convert("1").convert("RGB"))),
    ("jpeg_cmyk", "img1.jpg", lambda p: _save(Image.fromarray(_rgb_fixture()).convert("CMYK"), p,
                                             quality=95), None),
])

REFUSED_IMAGES = table([
    # name, file name, writer(path), message
    ("tiff_float", "img1.tif", lambda p: _save(np.random.rand(F.H, F.W).astype(np.float32), p),
     r"floating-point pixels \(mode F\)"),
    ("tiff_int32", "img1.tif",
     lambda p: _save((np.arange(F.H * F.W).reshape(F.H, F.W) * 1000).astype(np.int32), p),
     r"32-bit integer pixels \(mode I\)"),
    ("empty_file", "img1.png", lambda p: open(p, "wb").close(), r"cannot read the image"),
    ("random_bytes", "img1.png", lambda p: open(p, "wb").write(os.urandom(300)),
     r"cannot read the image"),
    ("text_file", "img1.png", lambda p: open(p, "w").write("not an image\n"),
     r"cannot read the image"),
    ("truncated_png", "img1.png",
     lambda p: open(p, "wb").write(open(os.path.join(F.HERE, "img1.png"), "rb").read()[:120]),
     r"cannot read the image"),
    ("decompression_bomb", "img1.png", lambda p: open(p, "wb").write(png_header_only(30000, 30000)),
     r"decompression bomb"),
    ("wrong_size", "img1.png", lambda p: _save(np.zeros((F.H + 2, F.W, 3), np.uint8), p),
     r"is 48x42, the annotations say 48x40"),
])


def _image_case(tmp_path, file_name, writer):
    path = write_case(tmp_path, "kins2020",
                      lambda d: setkey(d["images"][0], "file_name", file_name))
    writer(str(tmp_path / file_name))
    return path


@pytest.mark.parametrize("name, file_name, writer, expected", ACCEPTED_IMAGES,
                         ids=[r[0] for r in ACCEPTED_IMAGES])
def test_images_of_other_formats_are_read_correctly(tmp_path, name, file_name, writer, expected):
    path = _image_case(tmp_path, file_name, writer)
    image = AmodalDataset(path, str(tmp_path))[0]["image"]
    assert image.shape == (3, F.H, F.W) and image.dtype == torch.float32
    if expected is not None:
        want = torch.from_numpy(np.array(expected())).permute(2, 0, 1).float() / 255.0
        assert torch.allclose(image, want, atol=1e-6), name
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_16bit_png_is_not_washed_out(tmp_path):
    """The issue's case: a 16-bit PNG became 99.9 % white; now mid-grey stays mid-grey."""
    path = _image_case(tmp_path, "img1.png", lambda p: _save(np.full((F.H, F.W), 32768,
                                                                     np.uint16), p))
    image = AmodalDataset(path, str(tmp_path))[0]["image"]
    assert torch.allclose(image, torch.full_like(image, 128 / 255.0))


@pytest.mark.parametrize("name, file_name, writer, message", REFUSED_IMAGES,
                         ids=[r[0] for r in REFUSED_IMAGES])
def test_bad_images_are_one_error_naming_file_and_record(tmp_path, name, file_name, writer,
                                                         message):
    path = _image_case(tmp_path, file_name, writer)
    ds = AmodalDataset(path, str(tmp_path))
    with pytest.raises(AnnotationError) as e:
        ds[0]
    text = str(e.value)
    assert text.startswith(path + ": ") and "\n" not in text
    assert "image id 1" in text and file_name in text and re.search(message, text), text
    assert ds[1]["image"].shape == (3, F.H, F.W)  # the other image is unaffected


def test_a_folder_where_an_image_should_be_is_missing(tmp_path):
    path = _image_case(tmp_path, "img1.png", lambda p: None)
    os.remove(tmp_path / "img1.png")
    os.mkdir(tmp_path / "img1.png")
    with pytest.raises(AnnotationError, match=r"1 image file\(s\).*missing.*img1.png"):
        AmodalDataset(path, str(tmp_path))


# -- shared set-up for the command lines --------------------------------------------------------
@pytest.fixture(scope="module")
def bad_checkpoints(checkpoint, tmp_path_factory):
    """name -> path of a broken checkpoint (see CHECKPOINTS)."""
    folder = tmp_path_factory.mktemp("ckpts")
    good = torch.load(checkpoint, weights_only=True)
    raw = open(checkpoint, "rb").read()
    paths = {}
    for name, make, _ in CHECKPOINTS:
        path = str(folder / f"{name}.pt")
        make(path, good, raw)
        paths[name] = path
    return paths


class Payload:
    """A pickle that would run a command when loaded unsafely."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"blade_pwned_{os.getpid()}")


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def _config(good, **changes):
    return dict(good, config=dict(good["config"], **changes))


CHECKPOINTS = table([
    # name, make(path, good checkpoint dict, raw bytes), message
    ("missing", lambda p, g, r: None, r"checkpoint .*missing.pt does not exist"),
    ("empty", lambda p, g, r: _write(p, b""), r"empty.pt: empty file, not a checkpoint"),
    ("truncated", lambda p, g, r: _write(p, r[: len(r) // 2]),
     r"truncated.pt: cannot read the checkpoint: the file is truncated or corrupt"),
    ("text", lambda p, g, r: _write(p, b"iteration,lr\n1,0.01\n"),
     r"text.pt: not a PyTorch checkpoint \(it starts with b'iter'\)"),
    ("folder", lambda p, g, r: os.mkdir(p), r"folder.pt: is a folder, not a checkpoint file"),
    ("fake_zip", lambda p, g, r: _write(p, b"PK\x03\x04" + os.urandom(200)),
     r"fake_zip.pt: cannot read the checkpoint"),
    ("malicious_pickle", lambda p, g, r: torch.save({"kit": "blade", "x": Payload()}, p),
     r"malicious_pickle.pt: refused: it holds objects other than tensors"),
    ("raw_pickle_payload", lambda p, g, r: _write(p, pickle.dumps(Payload(), protocol=2)),
     r"raw_pickle_payload.pt: refused"),
    ("not_a_dict", lambda p, g, r: torch.save([1, 2, 3], p),
     r"not_a_dict.pt is not a BLADE kit checkpoint"),
    ("foreign_dict", lambda p, g, r: torch.save({"state_dict": {}}, p),
     r"foreign_dict.pt is not a BLADE kit checkpoint"),
    ("old_version", lambda p, g, r: torch.save(dict(g, version=0), p),
     r"old_version.pt was written by checkpoint format version 0"),
    ("without_model", lambda p, g, r: torch.save({k: v for k, v in g.items() if k != "model"}, p),
     r"without_model.pt: kit checkpoint without a valid 'model'"),
    ("without_config", lambda p, g, r: torch.save(dict(g, config=None), p),
     r"without_config.pt: kit checkpoint without a valid 'config'"),
    ("weights_do_not_fit", lambda p, g, r: torch.save(_config(g, fpn_channels=32), p),
     r"weights_do_not_fit.pt: the weights do not fit the configuration saved with them "
     r"\(\d+ missing, \d+ unexpected, \d+ of another shape"),
    ("invalid_config", lambda p, g, r: torch.save(_config(g, iterations=0), p),
     r"invalid_config.pt: its saved configuration is not valid: iterations"),
    ("unknown_config_field", lambda p, g, r: torch.save(_config(g, warp_drive=True), p),
     r"unknown_config_field.pt: its saved configuration is not valid: .*warp_drive"),
])


@pytest.mark.parametrize("name, make, message", CHECKPOINTS, ids=[r[0] for r in CHECKPOINTS])
def test_bad_checkpoints_are_one_error_naming_the_file(bad_checkpoints, name, make, message):
    from blade.engine import CheckpointError, load_model

    with pytest.raises(CheckpointError) as e:
        load_model(bad_checkpoints[name])
    text = str(e.value)
    assert "\n" not in text and re.search(message, text), text
    assert "weights_only=False" not in text and not os.path.exists(MARKER)


# -- blade.train ---------------------------------------------------------------------------------
TRAIN_OPTIONS = table([
    ("iterations_zero", ["--iterations", "0"], r"iterations \(--iterations\) must be an integer >= 1, got 0"),
    ("iterations_negative", ["--iterations", "-3"], r"--iterations.*>= 1, got -3"),
    ("iterations_not_a_number", ["--iterations", "abc"], r"argument --iterations"),
    ("batch_size_zero", ["--batch-size", "0"], r"--batch-size.*>= 1, got 0"),
    ("checkpoint_every_zero", ["--checkpoint-every", "0"], r"--checkpoint-every.*>= 1"),
    ("log_every_zero", ["--log-every", "0"], r"--log-every.*>= 1"),
    ("min_size_zero", ["--min-size", "0"], r"--min-size.*>= 1"),
    ("max_steps_zero", ["--max-steps", "0"], r"argument --max-steps: must be an integer >= 1"),
    ("max_steps_negative", ["--max-steps", "-1"], r"argument --max-steps: must be an integer >= 1"),
    ("device_gpu9", ["--device", "gpu9"], r"device 'gpu9' is not a device name"),
    ("lr_negative", ["--lr", "-0.1"], r"lr \(--lr\) must be a finite number > 0"),
    ("lr_nan", ["--lr", "nan"], r"lr \(--lr\) must be a finite number > 0.*nan"),
    ("lr_inf", ["--lr", "inf"], r"lr \(--lr\) must be a finite number"),
    ("lr_steps_negative", ["--lr-steps", "-5"], r"lr_steps \(--lr-steps\) must be integers >= 0"),
    ("K_nan", ["--K", "nan"], r"K \(--K\) must be a finite number"),
    ("alpha_proj_negative", ["--alpha-proj", "-1"], r"alpha_proj \(--alpha-proj\)"),
    ("t_above_one", ["--t", "2"], r"t \(--t\) must be a finite number >= 0.0 and <= 1.0"),
    ("score_thresh_above_one", ["--score-thresh", "2"], r"--score-thresh"),
    ("seed_negative", ["--seed", "-1"], r"seed \(--seed\) must be an integer >= 0"),
    ("workers_negative", ["--workers", "-1"], r"--workers"),
    ("momentum_nan", ["--momentum", "nan"], r"--momentum"),
    ("detect_box_unknown", ["--detect-box", "diagonal"], r"detect_box .* must be one of"),
    ("norm_unknown", ["--mask-branch-norm", "LN"], r"mask_branch_norm"),
    ("vis_loss_unknown", ["--vis-loss", "hinge"], r"vis_loss must be one of"),
    ("schema_unknown", ["--schema", "coco"], r"argument --schema: invalid choice"),
    ("preset_unknown", ["--preset", "huge"], r"argument --preset: invalid choice"),
    ("resume_and_overwrite", ["--resume", "--overwrite"], r"--resume .* --overwrite .* one of"),
    ("resume_without_run", ["--resume"], r"last.pt: --resume, but there is no checkpoint"),
])


def _train_args(synthetic_dir, out):
    return ["--preset", "smoke", "--data", synthetic_dir, "--out", out, "--no-progress",
            "--iterations", "2"]


@pytest.mark.parametrize("name, extra, message", TRAIN_OPTIONS, ids=[r[0] for r in TRAIN_OPTIONS])
def test_train_options_are_checked_where_parsed(synthetic_dir, tmp_path, capsys, name, extra,
                                                message):
    from blade.train import main

    out = tmp_path / "run"
    code, err = in_process(main, _train_args(synthetic_dir, out) + extra, capsys)
    one_error_line(code, err, message)
    assert not out.exists() or not os.listdir(out)  # nothing trained, nothing written


TRAIN_DATA = table([
    # name, edit of the kins2020 fixture, extra options, message
    ("all_boxes_zero_area", lambda d: [a["a_bbox"].__setitem__(2, 0) for a in d["annotations"]],
     [], r"kins2020.json: no image has an instance to train on \(skipped: "
         r"\{'amodal_box_zero_area_skipped': 4\}"),
    ("nan_bbox", lambda d: ann(d)["a_bbox"].__setitem__(0, NAN), [],
     r"kins2020.json: annotation id 1, key 'a_bbox'"),
    ("no_annotations", lambda d: setkey(d, "annotations", []), ["--schema", "kins2020"],
     r"kins2020.json: no image has an instance to train on"),
])


@pytest.mark.parametrize("name, edit, extra, message", TRAIN_DATA, ids=[r[0] for r in TRAIN_DATA])
def test_train_on_bad_data(tmp_path, capsys, name, edit, extra, message):
    from blade.train import main

    path = write_case(tmp_path / "data", "kins2020", edit)
    argv = ["--preset", "smoke", "--train-ann", path, "--train-images", tmp_path / "data",
            "--out", tmp_path / "run", "--no-progress", "--iterations", "2", *extra]
    one_error_line(*in_process(main, argv, capsys), message)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_paths(synthetic_dir, tmp_path, capsys):
    from blade.train import main

    (tmp_path / "file").write_text("x")
    rows = [  # --out a file; --data missing; --train-ann a folder; --train-images a file
        (_train_args(synthetic_dir, tmp_path / "file"), r"file: --out is a file"),
        (_train_args(str(tmp_path / "nowhere"), tmp_path / "r"), r"nowhere/train.json does not"),
        (["--train-ann", tmp_path, "--train-images", tmp_path, "--out", tmp_path / "r"],
         r"is a folder, not an annotation file"),
        (["--train-ann", os.path.join(synthetic_dir, "train.json"), "--train-images",
          tmp_path / "file", "--out", tmp_path / "r"], r"is a file, not an image folder"),
        (["--out", tmp_path / "r"], r"give --data DIR, or --train-ann"),
    ]
    for argv, message in rows:
        one_error_line(*in_process(main, argv, capsys), message)
    assert (tmp_path / "file").read_text() == "x"


COUNTED.append([("train_paths", 5)] * 5)


def test_existing_run_is_refused_resumed_or_overwritten(synthetic_dir, tmp_path, capsys):
    from blade.engine import load_checkpoint
    from blade.train import main

    out = tmp_path / "run"
    args = _train_args(synthetic_dir, out)
    assert in_process(main, args + ["--checkpoint-every", "1"], capsys)[0] == 0
    before = digest(out)
    one_error_line(*in_process(main, args, capsys), r"run: already holds a training run .*"
                   r"continue it with --resume, replace it with --overwrite")
    assert digest(out) == before  # refused: nothing replaced, nothing mixed in
    (out / "notes.txt").write_text("mine")
    code, _ = in_process(main, args + ["--overwrite", "--checkpoint-every", "2"], capsys)
    assert code == 0
    assert sorted(os.listdir(out / "checkpoints")) == ["iter_0000002.pt", "last.pt"]  # no stale
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: left alone
    assert load_checkpoint(str(out / "checkpoints" / "last.pt"))["iteration"] == 2


COUNTED.append([("existing_run", 1)])


# -- after an interruption -------------------------------------------------------------------------
def test_resume_truncates_the_log_and_removes_partial_checkpoints(synthetic_dir, tmp_path):
    import pandas as pd

    from blade.config import preset
    from blade.engine import train

    cfg = preset("smoke", iterations=4, checkpoint_every=2)
    data = (os.path.join(synthetic_dir, "train.json"), os.path.join(synthetic_dir, "train"))
    train(cfg, *data, str(tmp_path), progress=False)
    ckpts = tmp_path / "checkpoints"
    # killed after logging iterations 3-4 but before their checkpoint was renamed into place,
    # in the middle of writing a log row
    shutil.copy(ckpts / "iter_0000002.pt", ckpts / "last.pt")
    (ckpts / "last.pt.tmp").write_bytes(os.urandom(1000))
    with open(tmp_path / "log.csv", "a") as f:
        f.write("5,0.01,1.2")
    train(cfg, *data, str(tmp_path), resume=True, progress=False)
    log = pd.read_csv(tmp_path / "log.csv")
    assert log.iteration.tolist() == [1, 2, 3, 4]  # no duplicate rows for 3 and 4
    assert not list(ckpts.glob("*.tmp"))


COUNTED.append([("log_after_kill", 1), ("stale_tmp", 1)])


def test_full_disk_is_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from blade.config import preset
    from blade.engine import save_checkpoint
    from blade.model import BladeModel

    model = BladeModel(preset("smoke"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = str(tmp_path / "checkpoints" / "last.pt")
    save_checkpoint(path, model, opt, None, 1, preset("smoke"), ["car"])
    before = digest(path)
    real = torch.save

    def full(obj, f, *a, **k):
        real(obj, f, *a, **k)  # the partial file exists when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"last.pt: cannot write the checkpoint \(.*unexpected pos"
                                      r".*\); \d+ MB free on that disk \(full\?\). The previous"):
        save_checkpoint(path, model, opt, None, 2, preset("smoke"), ["car"])
    assert digest(path) == before and not os.path.exists(path + ".tmp")


COUNTED.append([("full_disk", 1)])


def test_non_finite_loss_names_the_images_of_the_batch(synthetic_dir, tmp_path, monkeypatch):
    import blade.model
    from blade.config import preset
    from blade.engine import NonFiniteLoss, train

    real = blade.model.blade_criterion

    def poisoned(outputs, targets, cfg, iteration=0):
        terms, weights = real(outputs, targets, cfg, iteration)
        terms["vis_proj"] = terms["vis_proj"] * float("inf")
        return terms, weights

    monkeypatch.setattr(blade.model, "blade_criterion", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"'vis_proj' is inf at iteration 0 .*images of the "
                                            r"batch: \d{6}\.png \(image id \d+\), \d{6}\.png"):
        train(preset("smoke", iterations=2), os.path.join(synthetic_dir, "train.json"),
              os.path.join(synthetic_dir, "train"), str(tmp_path), progress=False)


COUNTED.append([("non_finite_loss", 1)])


# -- blade.data.synthetic ---------------------------------------------------------------------
SYNTHETIC_OPTIONS = table([
    ("train_negative", ["--train", "-5"], r"argument --train: must be an integer >= 0, got -5"),
    ("val_negative", ["--val", "-1"], r"argument --val: must be an integer >= 0"),
    ("both_zero", ["--train", "0", "--val", "0"], r"nothing to generate"),
    ("seed_negative", ["--seed", "-1"], r"argument --seed: must be an integer >= 0"),
    ("level_mix_nan", ["--level-mix", "nan"], r"level_mix \(--level-mix\) must be 4 non-negative"),
    ("level_mix_four_with_nan", ["--level-mix", "nan", "0", "0", "1"], r"level_mix"),
    ("level_mix_wrong_sum", ["--level-mix", "0.5", "0.5", "0.5", "0.5"], r"level_mix"),
    ("bg_mix_nan", ["--bg-mix", "nan", "nan", "nan", "nan"], r"bg_mix \(--bg-mix\)"),
    ("placement_trials_zero", ["--placement-trials", "0"], r"placement_trials .* >= 1, got 0"),
    ("max_clutter_zero", ["--max-clutter", "0"], r"max_clutter"),
    ("min_width_nan", ["--min-width", "nan"], r"min_width"),
    ("image_size_tiny", ["--image-size", "8"], r"image_size .* >= 32"),
    ("classes_unknown", ["--classes", "spaceship"], r"classes must be a non-empty subset"),
])


@pytest.mark.parametrize("name, extra, message", SYNTHETIC_OPTIONS,
                         ids=[r[0] for r in SYNTHETIC_OPTIONS])
def test_synthetic_options_are_checked(tmp_path, capsys, name, extra, message):
    from blade.data.synthetic import main

    out = tmp_path / "data"
    code, err = in_process(main, ["--out", out, "--train", "1", "--val", "1", "--quiet",
                                  *extra], capsys)
    one_error_line(code, err, message)
    assert not out.exists()


def test_synthetic_never_writes_over_a_dataset(tmp_path, capsys):
    from blade.data.synthetic import main

    out = tmp_path / "data"
    args = ["--out", out, "--val", "1", "--quiet", "--image-size", "64"]
    assert in_process(main, args + ["--train", "3"], capsys)[0] == 0
    before = digest(out)
    one_error_line(*in_process(main, args + ["--train", "1"], capsys),
                   r"data: already holds a generated dataset .*--overwrite")
    assert digest(out) == before
    (tmp_path / "file").write_text("x")
    one_error_line(*in_process(main, ["--out", tmp_path / "file", "--train", "1", "--val", "1"],
                               capsys), r"file: --out is a file")
    assert in_process(main, args + ["--train", "1", "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(out / "train")) == ["000000.png"]  # no stale scenes
    assert len(json.load(open(out / "train.json"))["images"]) == 1


COUNTED.append([("synthetic_existing", 1), ("synthetic_out_file", 1)])


def test_assets_export_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    """``python -m blade.data.assets --export DIR``: a file given as DIR, or a different file
    under an asset's name in DIR, is one error; nothing is written or changed; exporting into
    a finished export again is harmless."""
    from blade.data.assets import main

    (tmp_path / "file").write_text("x")
    one_error_line(*in_process(main, ["--export", tmp_path / "file"], capsys),
                   r"file: --export is a file; give a folder")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "horse.png").write_bytes(b"my own horse")
    one_error_line(*in_process(main, ["--export", mine], capsys),
                   r"mine/horse\.png: exists and is not the asset horse\.png; .*nothing was written")
    assert os.listdir(mine) == ["horse.png"] and (mine / "horse.png").read_bytes() == b"my own horse"
    fresh = tmp_path / "fresh"
    assert in_process(main, ["--export", fresh], capsys)[0] == 0
    before = digest(fresh)
    assert in_process(main, ["--export", fresh], capsys)[0] == 0 and digest(fresh) == before


COUNTED.append([("assets_export_file", 1), ("assets_export_foreign_file", 1)])


# -- blade.experiments -------------------------------------------------------------------------
EXPERIMENTS_OPTIONS = table([
    ("only_empty", ["table1", "--only", ""], r"argument --only: no run names in ''"),
    ("only_commas", ["table1", "--only", " , "], r"argument --only: no run names"),
    ("only_run_of_table1_in_table2", ["table2", "--only", "bbtp"],
     r"'bbtp' is not a run of table2; its runs are blade, "),
    ("only_run_of_table2_in_table1", ["table1", "--only", "table2_3"],
     r"'table2_3' is not a run of table1"),
    ("only_unknown", ["table1", "--only", "sam"], r"unknown run 'sam'"),
    ("only_not_a_seed_run", ["seeds", "--only", "table2_3"], r"'table2_3' is not a seed run"),
    ("max_steps_zero", ["table1", "--only", "blade", "--max-steps", "0"],
     r"argument --max-steps: must be an integer >= 1"),
    ("limit_zero", ["table1", "--only", "blade", "--limit", "0"],
     r"argument --limit: must be an integer >= 1"),
    ("what_unknown", ["table3"], r"argument what: invalid choice"),
    ("export_without_out", ["export"], r"export needs --out FOLDER"),
    ("adopt_without_weights", ["adopt"], r"adopt needs --weights FOLDER"),
    ("adopt_missing_folder", ["adopt", "--weights", "no_such_weights_folder"],
     r"no_such_weights_folder: not a folder \(give the folder export wrote\)"),
    ("adopt_only_unknown", ["adopt", "--weights", "no_such_weights_folder", "--only", "sam"],
     r"unknown run 'sam'"),
])


@pytest.mark.parametrize("name, argv, message", EXPERIMENTS_OPTIONS,
                         ids=[r[0] for r in EXPERIMENTS_OPTIONS])
def test_experiments_options_are_checked_before_anything_runs(synthetic_dir, tmp_path, capsys,
                                                              name, argv, message):
    import blade.experiments as ex

    folders = ["--runs", tmp_path / "runs", "--results", tmp_path / "results", "--figures",
               tmp_path / "figures"]
    code, err = in_process(ex.main, argv + ["--preset", "smoke", "--data", synthetic_dir,
                                            "--no-progress", *folders], capsys)
    one_error_line(code, err, message)
    assert os.listdir(tmp_path) == []  # nothing trained, nothing written


# -- blade.predict -------------------------------------------------------------------------------
PREDICT_OPTIONS = table([
    ("threshold_nan", ["--threshold", "nan"], r"argument --threshold: must be a finite number"),
    ("threshold_two", ["--threshold", "2"], r"argument --threshold: .* in \[0.0, 1.0\], got 2"),
    ("threshold_negative", ["--threshold", "-0.1"], r"argument --threshold"),
    ("box_outside", ["--box", "10", "20", "300", "80"], r"--box #1 .* reaches outside .*256x256"),
    ("box_negative", ["--box", "-5", "20", "30", "80"], r"--box #1 .* reaches outside"),
    ("box_inverted", ["--box", "90", "80", "10", "20"], r"--box #1 .* has no area"),
    ("box_zero_width", ["--box", "10", "20", "10", "80"], r"--box #1 .* has no area"),
    ("box_nan", ["--box", "nan", "20", "30", "80"], r"--box #1 .* non-finite"),
    ("box_inf", ["--box", "10", "20", "inf", "80"], r"--box #1 .* non-finite"),
    ("second_box_bad", ["--box", "1", "1", "9", "9", "--box", "9", "9", "1", "1"],
     r"--box #2 .* has no area"),
    ("box_three_numbers", ["--box", "1", "2", "3"], r"argument --box: expected 4 arguments"),
    ("device_gpu9", ["--device", "gpu9"], r"device 'gpu9' is not a device name"),
    ("prompt_unknown", ["--prompt", "magic"], r"argument --prompt: invalid choice"),
])


@pytest.fixture()
def photo(synthetic_dir, tmp_path):
    path = tmp_path / "photo.png"
    shutil.copy(os.path.join(synthetic_dir, "val", "000000.png"), path)
    return path


@pytest.mark.parametrize("name, extra, message", PREDICT_OPTIONS,
                         ids=[r[0] for r in PREDICT_OPTIONS])
def test_predict_options(checkpoint, photo, tmp_path, capsys, name, extra, message):
    from blade.predict import main

    before = digest(photo)
    out = tmp_path / "overlay.png"
    code, err = in_process(main, ["--checkpoint", checkpoint, "--image", photo, "--out", out,
                                  *extra], capsys)
    one_error_line(code, err, message)
    assert not out.exists() and digest(photo) == before


PREDICT_FILES = table([
    # name, (out, json) as functions of (photo, checkpoint, tmp_path), message
    ("out_is_the_image", lambda i, c, t: (i, None), r"photo.png: --out is the --image file"),
    ("out_is_a_folder", lambda i, c, t: (t, None), r"--out is a folder; give a file name"),
    ("out_is_a_folder_to_be", lambda i, c, t: (str(t / "new") + "/", None), r"--out is a folder"),
    ("json_is_the_checkpoint", lambda i, c, t: (t / "o.png", c),
     r"--json is the --checkpoint file; writing it would destroy the input"),
    ("json_is_the_image", lambda i, c, t: (t / "o.png", i), r"--json is the --image file"),
    ("json_is_the_out", lambda i, c, t: (t / "o.png", t / "o.png"),
     r"--json and --out name the same file"),
    ("out_is_a_link_to_the_image", lambda i, c, t: (_link(i, t / "link.png"), None),
     r"link.png: --out is the --image file"),
])


def _link(target, link):
    os.symlink(target, link)
    return link


@pytest.mark.parametrize("name, paths, message", PREDICT_FILES, ids=[r[0] for r in PREDICT_FILES])
def test_predict_never_writes_over_its_inputs(checkpoint, photo, tmp_path, capsys, name, paths,
                                              message):
    from blade.predict import main

    ckpt = tmp_path / "model.pt"
    shutil.copy(checkpoint, ckpt)
    out, js = paths(photo, ckpt, tmp_path)
    before = {p: digest(p) for p in (photo, ckpt)}
    argv = ["--checkpoint", ckpt, "--image", photo, "--out", out] + (["--json", js] if js else [])
    one_error_line(*in_process(main, argv, capsys), message)
    assert {p: digest(p) for p in (photo, ckpt)} == before


PREDICT_IMAGES = table([
    ("corrupt_image", lambda p: open(p, "wb").write(b"\x89PNG\r\n\x1a\n" + os.urandom(100)),
     r"photo.png: cannot read the image"),
    ("float_tiff_image", lambda p: _save(np.random.rand(32, 32).astype(np.float32), p,
                                         format="TIFF"), r"floating-point pixels"),
    ("bomb_image", lambda p: open(p, "wb").write(png_header_only(40000, 40000)),
     r"decompression bomb"),
])


@pytest.mark.parametrize("name, writer, message", PREDICT_IMAGES,
                         ids=[r[0] for r in PREDICT_IMAGES])
def test_predict_bad_images(checkpoint, tmp_path, capsys, name, writer, message):
    from blade.predict import main

    image = tmp_path / "photo.png"
    writer(str(image))
    one_error_line(*in_process(main, ["--checkpoint", checkpoint, "--image", image, "--out",
                                      tmp_path / "o.png"], capsys), message)


def test_predict_reads_a_16bit_png(checkpoint, synthetic_dir, tmp_path, capsys):
    from blade.predict import main

    rgb = np.asarray(Image.open(os.path.join(synthetic_dir, "val", "000000.png")).convert("L"))
    _save(rgb.astype(np.uint16) * 257, tmp_path / "grey16.png")
    code, _ = in_process(main, ["--checkpoint", checkpoint, "--image", tmp_path / "grey16.png",
                                "--out", tmp_path / "o.png", "--box", "10", "20", "90", "80",
                                "--json", tmp_path / "m.json"], capsys)
    assert code == 0 and json.load(open(tmp_path / "m.json"))["width"] == 256


COUNTED.append([("predict_16bit", 1)])


@pytest.mark.parametrize("name", [r[0] for r in CHECKPOINTS if r[0] != "missing"])
def test_predict_and_evaluate_on_bad_checkpoints(bad_checkpoints, photo, synthetic_dir, tmp_path,
                                                 capsys, name):
    from blade.evaluate import main as evaluate
    from blade.predict import main as predict

    path = bad_checkpoints[name]
    line = one_error_line(*in_process(predict, ["--checkpoint", path, "--image", photo, "--out",
                                                tmp_path / "o.png"], capsys), re.escape(path))
    assert "weights_only=False" not in line
    one_error_line(*in_process(evaluate, ["--checkpoint", path, "--ann",
                                          os.path.join(synthetic_dir, "val.json"), "--images",
                                          os.path.join(synthetic_dir, "val"), "--out",
                                          tmp_path / "e", "--no-coco", "--no-progress"], capsys),
                   re.escape(path))
    assert not (tmp_path / "e").exists() and not os.path.exists(MARKER)


# -- blade.evaluate ----------------------------------------------------------------------------------
def _no_evaluated_objects(d):
    for a in d["annotations"]:
        a["occlude_rate"] = 0.95  # over the last level (90 %): not evaluated


EVALUATE_CASES = table([
    # name, edit of val.json (or None), extra options, message
    ("limit_zero", None, ["--limit", "0"], r"argument --limit: must be an integer >= 1, got 0"),
    ("limit_negative", None, ["--limit", "-1"], r"argument --limit"),
    ("limit_not_a_number", None, ["--limit", "all"], r"argument --limit: expected an integer"),
    ("device_gpu9", None, ["--device", "gpu9"], r"device 'gpu9' is not a device name"),
    ("eval_batch_size_zero", None, ["--batch-size", "0"],
     r"argument --batch-size: must be an integer >= 1, got 0"),
    ("eval_workers_negative", None, ["--workers", "-2"],
     r"argument --workers: must be an integer >= 0, got -2"),
    ("eval_workers_not_a_number", None, ["--workers", "many"],
     r"argument --workers: expected an integer"),
    ("no_evaluated_objects", _no_evaluated_objects, [],
     r"val.json: no evaluated objects in 6 image\(s\)"),
    ("nan_visible_bbox", lambda d: ann(d)["visible_bbox"].__setitem__(0, NAN), [],
     r"val.json: annotation id 1, key 'visible_bbox': box .* non-finite"),
    ("garbage_rle", lambda d: setkey(ann(d)["segmentation"], "counts", "###"), [],
     r"val.json: annotation id 1, key 'amodal mask': RLE counts"),
    ("duplicate_image", lambda d: setkey(d["images"][1], "id", d["images"][0]["id"]), [],
     r"val.json: image id 1: appears twice"),
])


@pytest.mark.parametrize("name, edit, extra, message", EVALUATE_CASES,
                         ids=[r[0] for r in EVALUATE_CASES])
def test_evaluate_bad_input(checkpoint, synthetic_dir, tmp_path, capsys, name, edit, extra,
                            message):
    from blade.evaluate import main

    ann_file = os.path.join(synthetic_dir, "val.json")
    if edit is not None:
        data = json.load(open(ann_file))
        edit(data)
        ann_file = str(tmp_path / "val.json")
        json.dump(data, open(ann_file, "w"))
    out = tmp_path / "eval"
    code, err = in_process(main, ["--checkpoint", checkpoint, "--ann", ann_file, "--images",
                                  os.path.join(synthetic_dir, "val"), "--out", out, "--no-coco",
                                  "--no-progress", *extra], capsys)
    one_error_line(code, err, message)
    assert not out.exists()  # in particular no 1-byte objects.csv


def test_evaluate_paths(checkpoint, synthetic_dir, tmp_path, capsys):
    from blade.evaluate import main

    (tmp_path / "file").write_text("x")
    ann_file, images = os.path.join(synthetic_dir, "val.json"), os.path.join(synthetic_dir, "val")
    rows = [  # --out a file; --images a file; --ann a folder
        ([ann_file, images, tmp_path / "file"], r"file: --out is a file"),
        ([ann_file, tmp_path / "file", tmp_path / "e"], r"--images is a file"),
        ([images, images, tmp_path / "e"], r"val: is a folder, not an annotation file"),
    ]
    for (a, i, o), message in rows:
        one_error_line(*in_process(main, ["--checkpoint", checkpoint, "--ann", a, "--images", i,
                                          "--out", o, "--no-coco", "--no-progress"], capsys),
                       message)
    assert (tmp_path / "file").read_text() == "x"


COUNTED.append([("evaluate_paths", 1)] * 3)


# -- true subprocesses: the command line is the point -----------------------------------------
def test_nan_polygon_in_training_is_an_error_not_a_memory_blow_up(tmp_path):
    """The issue's worst case: one NaN polygon coordinate made training allocate ~23 GB."""
    path = write_case(tmp_path / "data", "kins2020",
                      lambda d: ann(d, 1)["a_segm"][0].__setitem__(3, NAN))
    code, err, _ = subprocess_cli("blade.train", [
        "--preset", "smoke", "--train-ann", path, "--train-images", tmp_path / "data", "--out",
        tmp_path / "run", "--iterations", "2", "--no-progress"], tmp_path)
    one_error_line(code, err, re.escape(path) + r": annotation id 2, key 'amodal mask': polygon "
                   r"has a non-finite coordinate")


def test_cli_subprocesses_print_one_line(synthetic_dir, checkpoint, photo, tmp_path):
    """One case per command line, as a shell user sees it (exit status, stderr)."""
    bad_ann = write_case(tmp_path / "bad", "cocoa_cls",
                         lambda d: setkey(ann(d)["visible_mask"], "counts", 7))
    cases = [
        ("blade.train", _train_args(synthetic_dir, tmp_path / "r1") + ["--iterations", "0"],
         r"iterations \(--iterations\) must be an integer >= 1"),
        ("blade.train", ["--train-ann", bad_ann, "--train-images", tmp_path / "bad", "--out",
                         tmp_path / "r2", "--preset", "smoke"], r"annotation id 1, key 'visible"),
        ("blade.data.synthetic", ["--out", tmp_path / "d", "--train", "-5"],
         r"argument --train: must be an integer >= 0, got -5"),
        ("blade.experiments", ["table1", "--only", "", "--preset", "smoke", "--runs",
                               tmp_path / "x"], r"argument --only: no run names"),
        ("blade.predict", ["--checkpoint", checkpoint, "--image", photo, "--out", photo],
         r"--out is the --image file"),
        ("blade.evaluate", ["--checkpoint", tmp_path / "none.pt", "--ann", bad_ann, "--images",
                            tmp_path / "bad", "--out", tmp_path / "e"], r"none.pt does not exist"),
    ]
    before = digest(photo)
    for module, argv, message in cases:
        code, err, _ = subprocess_cli(module, argv, tmp_path)
        one_error_line(code, err, message)
    assert digest(photo) == before
    assert not any((tmp_path / n).exists() for n in ("r1", "r2", "d", "x", "e"))


COUNTED.append([("subprocess_cases", 1)] * 2)  # the first 4 repeat in-process rows


def test_malicious_checkpoint_in_a_subprocess(bad_checkpoints, photo, tmp_path):
    code, err, _ = subprocess_cli("blade.predict", [
        "--checkpoint", bad_checkpoints["malicious_pickle"], "--image", photo, "--out",
        tmp_path / "o.png"], tmp_path)
    line = one_error_line(code, err, r"refused: it holds objects other than tensors")
    assert "weights_only" not in err and "weights_only=False" not in line
    assert not os.path.exists(MARKER)  # the payload never ran


def test_existing_run_refused_in_a_subprocess(checkpoint, synthetic_dir, tmp_path):
    run_dir = os.path.dirname(os.path.dirname(checkpoint))
    before = digest(run_dir)
    code, err, _ = subprocess_cli("blade.train", _train_args(synthetic_dir, run_dir), tmp_path)
    one_error_line(code, err, r"already holds a training run")
    assert digest(run_dir) == before


def test_bad_image_in_a_data_loader_worker_is_one_line(tmp_path):
    """With worker processes (the cpu preset has one) a bad image must not come back as the
    worker's traceback inside the message."""
    path = write_case(tmp_path / "data", "kins2020")
    _write(tmp_path / "data" / "img2.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    code, err, _ = subprocess_cli("blade.train", [
        "--preset", "smoke", "--train-ann", path, "--train-images", tmp_path / "data", "--out",
        tmp_path / "run", "--iterations", "2", "--workers", "1", "--no-progress"], tmp_path)
    one_error_line(code, err, re.escape(path) + r": image id 2: .*img2.png: cannot read the image")


def test_disk_full_while_training_in_a_subprocess(tmp_path):
    path = write_case(tmp_path / "data", "kins2020")
    code, err, _ = subprocess_cli("blade.train", [
        "--preset", "smoke", "--train-ann", path, "--train-images", tmp_path / "data", "--out",
        tmp_path / "run", "--iterations", "2", "--no-progress"], tmp_path, fsize=2 * 2**20)
    one_error_line(code, err, r"last.pt|iter_0000002.pt", r"cannot write the checkpoint",
                   r"MB free on that disk")
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


COUNTED.append([("worker_image", 1), ("disk_full_subprocess", 1)])


def test_debug_shows_the_traceback(synthetic_dir, tmp_path, monkeypatch):
    from blade.train import main

    args = [str(a) for a in _train_args(synthetic_dir, tmp_path / "run") + ["--iterations", "0"]]
    with pytest.raises(ValueError, match="iterations"):
        main(args + ["--debug"])
    monkeypatch.setenv("BLADE_DEBUG", "1")
    with pytest.raises(ValueError, match="iterations"):
        main(args)
    monkeypatch.delenv("BLADE_DEBUG")
    code, err, _ = subprocess_cli("blade.train", args + ["--debug"], tmp_path)
    assert code != 0 and "Traceback" in err and "ValueError: iterations" in err


# -- the count -----------------------------------------------------------------------------------
def test_the_table_holds_at_least_120_bad_inputs():
    accepted = len(ACCEPTED_IMAGES) + 1  # inputs that are fine and must come out right
    bad = sum(len(rows) for rows in COUNTED) - accepted
    assert bad >= 120, bad
