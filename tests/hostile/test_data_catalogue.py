"""Catalogue of hostile data-set inputs: each must fail fast with a clear error.

Every case writes a tiny refer-layout data set (two train images, ref 100 on image 0 with
polygons, ref 101 on image 1 with an RLE), breaks one value, and checks the error type, a
fragment naming the bad value and the file it came from. Cases that used to exhaust memory,
segfault or hang run in a child process with a 2 GiB address-space limit and a 10 s timeout, so a
regression fails the test instead of taking the runner down.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from refer_testdata import make_refer  # noqa: E402

from wrel.data.dataset import RefSegDataset, load_samples  # noqa: E402
from wrel.data.images import (  # noqa: E402
    MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    read_mask_file,
    read_rgb,
)
from wrel.data.refer import REFS_FILE, restricted_loads  # noqa: E402
from wrel.data.refsegrs import load_refsegrs_samples  # noqa: E402

NAME = "tiny"
FAST_S = 5.0  # an in-process case (fixture writing excluded) must finish well within this
CHILD_TIMEOUT_S = 10
CHILD_MEMORY = 2 << 30  # RLIMIT_AS of the child process, bytes

Edit = Callable[[Path], None]


# --- fixture editing -------------------------------------------------------------------------


def _edit_refs(edit: Callable[[list[dict[str, Any]]], Any]) -> Edit:
    def apply(root: Path) -> None:
        path = root / NAME / REFS_FILE
        refs = pickle.loads(path.read_bytes())  # our own fixture, written by make_refer
        edit(refs)
        path.write_bytes(pickle.dumps(refs, protocol=4))

    return apply


def _ref(key: str, value: Any, index: int = 0) -> Edit:
    return _edit_refs(lambda refs: refs[index].__setitem__(key, value))


def _drop_ref_key(key: str) -> Edit:
    return _edit_refs(lambda refs: refs[0].pop(key))


def _edit_instances(edit: Callable[[dict[str, Any]], Any]) -> Edit:
    def apply(root: Path) -> None:
        path = root / NAME / "instances.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))  # NaN and Infinity written as JSON accepts them

    return apply


def _ann(ann_id: int, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        next(a for a in data["annotations"] if a["id"] == ann_id)[key] = value

    return _edit_instances(edit)


def _image(image_id: int, key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        next(im for im in data["images"] if im["id"] == image_id)[key] = value

    return _edit_instances(edit)


def _image_size(image_id: int, height: Any, width: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        image = next(im for im in data["images"] if im["id"] == image_id)
        image["height"], image["width"] = height, width

    return _edit_instances(edit)


def _rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE string of ``counts`` (any ints, negative ones included).

    Each count (after the second, as its difference to the count two places back) is written
    in 5-bit groups, low bits first, as characters from '0'; bit 0x20 marks "more groups",
    bit 0x10 of the last group is the sign.
    """
    chars = []
    for position, count in enumerate(counts):
        value = count - counts[position - 2] if position > 2 else count
        while True:
            group, value = value & 0x1F, value >> 5
            done = value == (-1 if group & 0x10 else 0)
            chars.append(chr(48 + (group if done else group | 0x20)))
            if done:
                break
    return "".join(chars)


def _polygon_with(position: int, value: Any) -> Edit:
    """Ref 100's annotation (0) with one coordinate of its polygon replaced."""
    poly: list[Any] = [2, 3, 12, 3, 12, 11, 2, 11]
    poly[position] = value
    return _ann(0, "segmentation", [poly])


def _write_text(relative: str, text: str) -> Edit:
    def apply(root: Path) -> None:
        (root / NAME / relative).write_text(text)

    return apply


def _write_pickle_bytes(data: bytes) -> Edit:
    def apply(root: Path) -> None:
        (root / NAME / REFS_FILE).write_bytes(data)

    return apply


def _shared_pickle() -> bytes:
    """~0.5 kB pickle: a sub-list repeated 30 times over 8 levels (30**8 paths to walk)."""
    junk: Any = ["x"]
    for _ in range(8):
        junk = [junk] * 30
    ref = {"ref_id": 1, "image_id": 0, "ann_id": 0, "category_id": 1, "split": "train",
           "sentences": [{"raw": "a car"}], "junk": junk}  # fmt: skip
    return pickle.dumps([ref], protocol=4)


def _deep_pickle() -> bytes:
    """A list nested 100,000 deep, as raw opcodes (pickle.dumps itself would recurse)."""
    depth = 100_000
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels; its data is a few bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))  # fmt: skip


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input: how to break the fixture and the error it must give."""

    edit: Edit
    fragment: str  # must appear verbatim in the message
    file: str  # the file the message must name
    error: type[Exception] = ValueError


IN_PROCESS: dict[str, Case] = {
    # refs(unc).p: ids, types and fields
    "ref_id None": Case(_ref("ref_id", None), "ref_id = None (NoneType)", REFS_FILE),
    "ref_id list": Case(_ref("ref_id", [100]), "ref_id = [100] (list)", REFS_FILE),
    "ref_id 1.7": Case(_ref("ref_id", 1.7), "ref_id = 1.7 (float); ids must be ints", REFS_FILE),
    "ref_id bool": Case(_ref("ref_id", True), "ref_id = True (bool)", REFS_FILE),
    "ref_id negative": Case(_ref("ref_id", -3), "ref_id = -3 (int)", REFS_FILE),
    "ref_id 2**70": Case(_ref("ref_id", 2**70), f"ref_id = {2**70} (int)", REFS_FILE),
    "ref_id str": Case(_ref("ref_id", "100"), "ref_id = '100' (str)", REFS_FILE),
    "image_id None": Case(_ref("image_id", None), "ref 100 has image_id = None", REFS_FILE),
    "image_id list": Case(_ref("image_id", [0]), "ref 100 has image_id = [0]", REFS_FILE),
    "ann_id missing": Case(_drop_ref_key("ann_id"), "ref 100 has no 'ann_id'", REFS_FILE),
    "split 5": Case(_ref("split", 5), "ref 100 has split = 5 (int)", REFS_FILE),
    "sentences str": Case(
        _ref("sentences", "the car"), "ref 100 has sentences = 'the car' (str)", REFS_FILE
    ),
    "sentences empty": Case(_ref("sentences", []), "ref 100 has sentences = []", REFS_FILE),
    "sentence raw int": Case(
        _ref("sentences", [{"raw": 5}]), "ref 100: sentence 0 has raw = 5, not a str", REFS_FILE
    ),
    "sentence tokens str": Case(
        _ref("sentences", [{"raw": "a car", "tokens": "a car"}]), "has tokens = 'a car'", REFS_FILE
    ),
    "ref not a dict": Case(
        _edit_refs(lambda refs: refs.append(["x"])), "must hold a list of ref dicts", REFS_FILE
    ),
    "pickle with a global": Case(
        _write_pickle_bytes(pickle.dumps([{"x": print}])), "refusing to load builtins", REFS_FILE
    ),
    # instances.json: images
    "height negative": Case(
        _image(0, "height", -5), "image 0 (000.png): height must be positive, got -5", "instances"
    ),
    "width zero": Case(_image(0, "width", 0), "width must be positive, got 0", "instances"),
    "height float": Case(_image(0, "height", 32.5), "height must be an int, got 32.5", "instances"),
    "height str": Case(_image(0, "height", "32"), "height must be an int, got '32'", "instances"),
    "size over the cap": Case(
        _image_size(0, 100_000, 100_000),
        "image size 100000 x 100000 exceeds the cap",
        "instances",
    ),
    "image id None": Case(_image(0, "id", None), "an image has id = None", "instances"),
    "image file_name int": Case(_image(0, "file_name", 7), "has file_name = 7", "instances"),
    "duplicate image id": Case(
        _image(1, "id", 0), "duplicate image id 0; ids must be unique", "instances"
    ),
    # instances.json: annotations
    "ann image_id None": Case(
        _ann(0, "image_id", None), "annotation 0 has image_id = None", "instances"
    ),
    "ann category list": Case(
        _ann(0, "categories_id", [1]), "annotation 0 has categories_id = [1]", "instances"
    ),
    "ann on another image": Case(
        _ann(0, "image_id", 1), "its annotation 0 belongs to image 1", REFS_FILE
    ),
    "bbox of strings": Case(_ann(0, "bbox", ["a"]), "has bbox = ['a']", "instances"),
    "segmentation str": Case(
        _ann(0, "segmentation", "polygon"), "segmentation must be a list of polygons", "instances"
    ),
    "polygon str coordinate": Case(
        _polygon_with(2, "12"), "polygon 0 holds '12' (str) at position 2", "instances"
    ),
    "polygon bool coordinate": Case(_polygon_with(1, True), "holds True (bool)", "instances"),
    "polygon odd length": Case(
        _ann(0, "segmentation", [[2, 3, 12, 3, 12, 11, 2]]),
        "odd number of coordinates (7)",
        "instances",
    ),  # fmt: skip
    "polygon 6 px outside": Case(
        _polygon_with(2, 38), "vertex 1: x = 38.0 is outside the image (32 wide", "instances"
    ),
    "polygon outline too long": Case(
        _ann(0, "segmentation", [[0, 0, 32, 0] * 200]), "outline is", "instances"
    ),
    "rle counts dict": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": {"a": 1}}),
        "RLE counts must be a list of ints or a compressed string",
        "instances",
    ),  # fmt: skip
    "rle count float": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": [0, 1024.0]}),
        "RLE count 1024.0 (float) at position 1 is not an int",
        "instances",
    ),  # fmt: skip
    "rle string bad char": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": "0~"}),
        "RLE counts string holds '~' at position 1",
        "instances",
    ),  # fmt: skip
    "rle string truncated": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": "0P"}),
        "RLE counts string is truncated",
        "instances",
    ),  # fmt: skip
    "rle string long run": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": "0" + "o" * 9 + "0"}),
        "holds a run of 10 characters",
        "instances",
    ),  # fmt: skip
    # paths
    "file_name absolute": Case(
        _image(0, "file_name", "/etc/hostname"), "'/etc/hostname' points outside", "instances"
    ),
    "file_name dotdot": Case(
        _image(0, "file_name", "../../x.png"), "'../../x.png' points outside", "instances"
    ),
    "file_name dotdot backslash": Case(
        _image(0, "file_name", "..\\..\\x.png"), "a .. component", "instances"
    ),
}

CHILD: dict[str, Case] = {
    # These used to take 21.7 GB, segfault, or cost 790 MB before validation existed.
    "polygon 1e300": Case(
        _polygon_with(2, 1e300), "vertex 1: x = 1e+300 is outside the image", "instances"
    ),
    "polygon 1e7": Case(
        _polygon_with(5, 1e7), "vertex 2: y = 10000000.0 is outside the image", "instances"
    ),
    "polygon NaN": Case(
        _polygon_with(0, float("nan")),
        "holds the non-finite coordinate nan at position 0",
        "instances",
    ),  # fmt: skip
    "polygon -inf": Case(
        _polygon_with(3, float("-inf")), "non-finite coordinate -inf", "instances"
    ),
    "rle size 100000": Case(
        _ann(11, "segmentation", {"size": [100_000, 100_000], "counts": "0"}),
        "RLE size [100000, 100000] differs from the image's [height, width] = [32, 32]",
        "instances",
    ),  # fmt: skip
    "rle negative count": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": [0, -5, 1029]}),
        "RLE count -5 at position 1 is negative",
        "instances",
    ),  # fmt: skip
    "rle uncompressed short": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": [0, 100]}),
        "RLE counts sum to 100 pixels but the image has 32 x 32 = 1024",
        "instances",
    ),  # fmt: skip
    "rle uncompressed long": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": [0, 4_000_000_000]}),
        "RLE counts sum to 4000000000 pixels",
        "instances",
    ),  # fmt: skip
    "rle string short": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": _rle_string([0, 100])}),
        "RLE counts sum to 100 pixels but the image has 32 x 32 = 1024",
        "instances",
    ),  # fmt: skip
    "rle string negative": Case(
        _ann(11, "segmentation", {"size": [32, 32], "counts": _rle_string([0, 1030, -6])}),
        "RLE count -6 at position 2 is negative",
        "instances",
    ),  # fmt: skip
    "json nested 100k deep": Case(
        _write_text("instances.json", "[" * 100_000 + "]" * 100_000),
        "nests lists or objects too deeply",
        "instances",
    ),  # fmt: skip
    "json NaN literal height": Case(
        _write_text(
            "instances.json",
            '{"images": [{"id": 0, "file_name": "a", "height": NaN, '
            '"width": 3}], "annotations": [], "categories": []}',
        ),
        "height must be an int, got nan",
        "instances",
    ),  # fmt: skip
    "json huge int literal": Case(
        _write_text("instances.json", '{"images": [{"id": ' + "9" * 5000 + "}]}"),
        "is not valid JSON",
        "instances",
    ),  # fmt: skip
    "pickle shared sub-lists (30**8 paths)": Case(
        _write_pickle_bytes(_shared_pickle()), "a list is shared (referenced twice)", REFS_FILE
    ),
    "pickle nested 100k deep": Case(
        _write_pickle_bytes(_deep_pickle()), "nested deeper than 32", REFS_FILE
    ),
}

# Run in a fresh interpreter (numpy, Pillow and pycocotools only: about 0.4 s to start).
_CHILD_SCRIPT = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({CHILD_MEMORY}, {CHILD_MEMORY}))
from pathlib import Path
kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "refer":
    from wrel.data.images import segmentation_area
    from wrel.data.refer import read_refer
    data = read_refer(target, "{NAME}")
    for ann in data.annotations.values():  # what loading the samples decodes
        image = data.images[ann.image_id]
        segmentation_area(ann.segmentation, image.height, image.width)
else:
    from wrel.data.images import read_mask_file, read_rgb
    (read_rgb if kind == "image" else read_mask_file)(target)
print("LOADED")
"""


def _run_child(kind: str, target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        return subprocess.run(
            [sys.executable, "-c", _CHILD_SCRIPT, kind, str(target)],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {target} ran past {CHILD_TIMEOUT_S} s (hang or quadratic walk)")


def _assert_child_error(proc: subprocess.CompletedProcess[str], case: Case) -> None:
    assert proc.returncode == 1, (
        f"expected a Python error (exit 1), got exit {proc.returncode} (negative: killed by a "
        f"signal, e.g. -11 segfault); stderr tail:\n{proc.stderr[-2000:]}"
    )
    last = proc.stderr.strip().splitlines()[-1]
    name = case.error.__name__
    if case.error.__module__ != "builtins":
        name = f"{case.error.__module__}.{name}"
    assert last.startswith(f"{name}: "), proc.stderr[-2000:]
    assert case.fragment in last, last
    assert case.file in last, last


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_refer(tmp_path, num_images=2, name=NAME)
    return tmp_path


@pytest.mark.parametrize("case", IN_PROCESS.values(), ids=IN_PROCESS.keys())
def test_in_process_catalogue(root: Path, case: Case) -> None:
    case.edit(root)
    start = time.perf_counter()
    with pytest.raises(case.error) as info:
        load_samples(root, "train", name=NAME)
    assert time.perf_counter() - start < FAST_S
    message = str(info.value)
    assert case.fragment in message, message
    assert case.file in message, message


@pytest.mark.parametrize("case", CHILD.values(), ids=CHILD.keys())
def test_child_process_catalogue(root: Path, case: Case) -> None:
    case.edit(root)
    _assert_child_error(_run_child("refer", root), case)


def test_node_cap_and_shared_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    import wrel.data.refer as refer

    word = "train"
    shared_leaves = [{"split": word, "n": 7} for _ in range(50)]  # strings may repeat freely
    assert restricted_loads(pickle.dumps(shared_leaves)) == shared_leaves
    monkeypatch.setattr(refer, "MAX_PICKLE_NODES", 100)
    with pytest.raises(ValueError, match="more than 100 objects"):
        restricted_loads(pickle.dumps(shared_leaves), "big.p")


def test_split_5_is_not_dropped(root: Path) -> None:
    """A ref with a non-str split used to vanish from every split; now loading fails."""
    _ref("split", 5, index=1)(root)
    with pytest.raises(ValueError, match=r"ref 101 has split = 5"):
        load_samples(root, "train", name=NAME)


def test_polygon_slightly_outside_is_clipped(root: Path) -> None:
    from wrel.data.refer import read_refer

    _ann(0, "segmentation", [[-3, 3, 12, 3, 12, 11.5, -2.5, 35]])(root)
    data = read_refer(root, NAME)
    assert data.annotations[0].segmentation == [[0.0, 3.0, 12.0, 3.0, 12.0, 11.5, 0.0, 32.0]]
    samples = load_samples(root, "train", name=NAME)
    mask = samples[0].read_mask()
    assert mask.shape == (32, 32) and mask[:, :12].any() and not mask[:, 13:].any()


def test_outside_root_allowed_by_option(root: Path) -> None:
    _image(0, "file_name", "/elsewhere/img.png")(root)
    with pytest.raises(ValueError, match="allow_outside_root"):
        load_samples(root, "train", name=NAME, check_files=False)
    samples = load_samples(root, "train", name=NAME, check_files=False, allow_outside_root=True)
    assert samples[0].image_path == Path("/elsewhere/img.png")


def test_data_config_allow_outside_root_reaches_the_loader(root: Path) -> None:
    from wrel.engine.experiment import DataConfig
    from wrel.engine.loaders import load_split_samples

    _image(0, "file_name", "../outside.png")(root)
    (root / "images" / NAME / "outside.png").write_bytes(
        (root / "images" / NAME / "JPEGImages" / "000.png").read_bytes()
    )
    cfg = DataConfig(root=str(root), name=NAME, accurate_ratio=None, val_split=None,
                     test_split=None)  # fmt: skip
    with pytest.raises(ValueError, match="a .. component"):
        load_split_samples(cfg)
    cfg.allow_outside_root = True
    train = load_split_samples(cfg)["train"]
    assert train[0].image_path.resolve() == (root / "images" / NAME / "outside.png").resolve()


@pytest.mark.parametrize("reader", ["image", "mask"])
def test_decompression_bomb_in_child(tmp_path: Path, reader: str) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    fragment = f"{reader} {bomb} is a decompression bomb"
    case = Case(lambda _: None, fragment, "bomb.png", ImageTooLargeError)
    _assert_child_error(_run_child(reader, bomb), case)


def test_image_over_the_cap_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(9000, 9000))  # 81 M pixels: under Pillow's own limits
    start = time.perf_counter()
    for read in (read_rgb, read_mask_file):
        with pytest.raises(ValueError, match=f"big.png is 9000 x 9000 pixels, over the cap of "
                                             f"{MAX_IMAGE_PIXELS:,}"):  # fmt: skip
            read(path)
    assert time.perf_counter() - start < FAST_S


def test_decompression_bomb_in_training_data(root: Path) -> None:
    samples = load_samples(root, "train", name=NAME)
    samples[0].image_path.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(ImageTooLargeError, match=r"000\.png is a decompression bomb"):
        RefSegDataset(samples, image_size=(16, 16))[0]


@pytest.mark.parametrize("index", ["../x", "a/b", "..", "a\\b"])
def test_refsegrs_index_is_a_plain_stem(tmp_path: Path, index: str) -> None:
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "output_phrase_train.txt").write_text(f"{index} the car on the left\n")
    with pytest.raises(ValueError, match="is not a plain file stem"):
        load_refsegrs_samples(tmp_path, "train", check_files=False)


def test_refsegrs_huge_numeric_index_gets_an_int64_id(tmp_path: Path) -> None:
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "output_phrase_train.txt").write_text("9" * 30 + " a car\n" + "²" + " a ship\n")
    samples = load_refsegrs_samples(tmp_path, "train", check_files=False)
    assert all(0 <= s.sample_id < 2**63 for s in samples)
    assert np.asarray([s.sample_id for s in samples], dtype=np.int64).shape == (2,)


def test_rle_string_helper_matches_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    from wrel.data.images import decode_segmentation

    box = np.zeros((32, 32), np.uint8)
    box[3:20, 5:9] = 1
    encoded = mask_utils.encode(np.asfortranarray(box))["counts"].decode("ascii")
    counts = [5 * 32 + 3, 17] + [15, 17] * 3 + [32 * 32 - 8 * 32 - 3 + 15 - 15]
    counts[-1] = 32 * 32 - sum(counts[:-1])
    assert _rle_string(counts) == encoded
    np.testing.assert_array_equal(decode_segmentation({"counts": encoded}, 32, 32), box)
