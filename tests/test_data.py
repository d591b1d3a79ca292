"""Bad and unusual input to the data pipeline (chapter 08): each case either works as a user expects or
fails with a message naming the file (and the line of a split list) and what is wrong.

All on a generated dataset of 4 classes of 32-pixel dishes, copied per case."""

import shutil
import unicodedata
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resvmamba.data import RECIPES, choose_recipe, food_dls, food_split, open_food_image


@pytest.fixture(scope="session")
def mini(mini_food):
    "4 classes × 10 images of 32 px (28 training, 12 validation) and 3 test images per class."
    return mini_food(n_classes=4, per_class=10)


@pytest.fixture
def copy(mini, tmp_path):
    "A fresh copy of the mini dataset for a case to damage."
    return Path(shutil.copytree(mini, tmp_path / "mini"))


def _lines(f):
    return f.read_text().splitlines()


def _write(f, lines):
    f.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# Input that must be refused: (what the case does to the dataset, call, exception, words of the message)
# ------------------------------------------------------------------------------------------------
def _in_two_splits(d):
    _write(d / "splits/val.txt", _lines(d / "splits/val.txt") + ["001/00100000.jpg 1"])  # also in train.txt


def _wrong_label(d):
    v = _lines(d / "splits/val.txt")
    v[2] = "000/00000009.jpg 3"
    _write(d / "splits/val.txt", v)


def _twice(d):
    t = _lines(d / "splits/train.txt")
    _write(d / "splits/train.txt", t + t[4:5])


def _corrupt(d):
    f = d / "train600x600/001/00100002.jpg"
    f.write_bytes(f.read_bytes()[:200])


def _not_an_image(d):
    (d / "val600x600/003/00300001.jpg").write_text("hello")


def _empty_val(d):
    (d / "splits/val.txt").write_text("\n")  # an empty line only: no entries


def _empty_train(d):
    (d / "splits/train.txt").write_text("")


def _class_without_training_images(d):  # class 002's training images dropped from the list
    _write(
        d / "splits/train.txt",
        [line for line in _lines(d / "splits/train.txt") if not line.startswith("002/")],
    )


def _class_folder_gone(d):
    shutil.rmtree(d / "train600x600/002")


def _class_folder_empty(d):
    for f in (d / "train600x600/002").iterdir():
        f.unlink()


REFUSED = {
    # case: (change, call on the changed root, exception type, words the message must hold)
    "root is a file": (
        None,
        lambda d: food_split(d / "classes.txt"),
        NotADirectoryError,
        ["classes.txt is a file, not a folder"],
    ),
    "root does not exist": (
        None,
        lambda d: food_split(d / "nowhere"),
        FileNotFoundError,
        ["nowhere does not exist"],
    ),
    "file in two splits": (
        _in_two_splits,
        food_split,
        ValueError,
        ["001/00100000.jpg is in two splits", "train.txt, line 8", "val.txt, line 13"],
    ),
    "label is not the folder": (
        _wrong_label,
        food_split,
        ValueError,
        ["val.txt, line 3", "000/00000009.jpg is in class folder 000/ but labelled 3"],
    ),
    "listed twice": (_twice, food_split, ValueError, ["train.txt", "listed twice, lines 5 and 29"]),
    "truncated JPEG": (
        _corrupt,
        lambda d: food_dls(d, size=32, bs=4),
        OSError,
        ["1 image(s) cannot be decoded", "00100002.jpg", "corrupt", "skip_corrupt=True"],
    ),
    "text named .jpg": (
        _not_an_image,
        lambda d: food_dls(d, size=32, bs=4),
        OSError,
        ["00300001.jpg", "corrupt or not an image"],
    ),
    # an empty set is refused before training, naming the list (the run would train, then fail while logging)
    "empty validation list": (
        _empty_val,
        lambda d: food_dls(d, size=32, bs=4),
        ValueError,
        [
            "splits/val.txt has no entries",
            "validation set would be empty",
            "'<class>/<file>.jpg <label>' lines",
        ],
    ),
    "empty training list": (
        _empty_train,
        lambda d: food_dls(d, size=32, bs=4),
        ValueError,
        ["splits/train.txt has no entries", "training set"],
    ),
    "random split, nothing held out": (
        None,
        lambda d: food_dls(d, size=32, bs=4, split="random", valid_pct=0),
        ValueError,
        ["split='random' leaves the validation set empty", "expected valid_pct in (0, 1)"],
    ),
    "random split, all held out": (
        None,
        lambda d: food_dls(d, size=32, bs=4, split="random", valid_pct=1),
        ValueError,
        ["split='random' leaves the training set empty"],
    ),
    # a class that is tested but never trained on: refused, naming the class
    "class missing from train list": (
        _class_without_training_images,
        food_split,
        ValueError,
        ["class 002 has 3 validation images but no training images", "train.txt lists none"],
    ),
    "random split, class folder gone": (
        _class_folder_gone,
        lambda d: food_split(d, "random"),
        ValueError,
        ["class 002 has 3 test images but no training images", "train600x600/002/ is empty or missing"],
    ),
    "random split, class folder empty": (
        _class_folder_empty,
        lambda d: food_dls(d, size=32, bs=4, split="random"),
        ValueError,
        ["class 002 has 3 test images but no training images"],
    ),
    "unknown recipe": (
        None,
        lambda d: food_dls(d, size=32, recipe="heavy"),
        ValueError,
        ["recipe='heavy': expected 'auto', 'paper', 'light' or a Recipe"],
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case, copy):
    change, call, exc, words = REFUSED[case]
    if change:
        change(copy)
    with pytest.raises(exc) as e:
        call(copy)
    for w in words:
        assert w in str(e.value), f"{case}: {w!r} not in {str(e.value)!r}"


def test_decompression_bomb_says_so(mini, monkeypatch):
    "PIL's size limit is reported as what it is, with the way to lift it, not as a corrupt file."
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # a 32x32 dish is over twice the limit
    f = mini / "val600x600/000/00000000.jpg"
    with pytest.raises(OSError) as e:
        open_food_image(f)
    assert (
        "00000000.jpg" in str(e.value)
        and "decompression bomb" in str(e.value)
        and "is corrupt" not in str(e.value)
    )
    with pytest.raises(OSError, match=r"decompression bomb.*raise PIL\.Image\.MAX_IMAGE_PIXELS"):
        food_dls(mini, size=32, bs=4)


@pytest.mark.parametrize("damage", [_corrupt, _not_an_image])
def test_skip_corrupt_skips_and_reports(damage, copy):
    damage(copy)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dls = food_dls(copy, size=32, bs=4, skip_corrupt=True)
    assert dls.food["n_skipped"] == 1
    assert [str(x.message) for x in w if "skipped 1 corrupt image(s)" in str(x.message)]
    kept = [p for p, _ in dls.food["sets"]["train"] + dls.food["sets"]["val"] + dls.food["sets"]["test"]]
    assert len(kept) == 40 + 12 - 1 and all(open_food_image(p) for p in kept)


# ------------------------------------------------------------------------------------------------
# Input that must simply work
# ------------------------------------------------------------------------------------------------
JUNK = [".DS_Store", "._00000000.jpg", "Thumbs.db", "desktop.ini", "DESKTOP.INI"]


@pytest.mark.parametrize("split", ["random", "paper"])
def test_hidden_and_system_files_ignored(split, mini, copy):
    for j in JUNK:
        (copy / "train600x600/000" / j).write_bytes(b"\0\1")
    (copy / "val600x600/002" / ".DS_Store").write_bytes(b"\0")
    (copy / "train600x600/.ipynb_checkpoints").mkdir()

    def rel(root):
        return {
            s: [(p.relative_to(root), label) for p, label in v] for s, v in food_split(root, split).items()
        }

    assert rel(copy) == rel(mini)
    dls = food_dls(copy, split=split, size=32, bs=4)  # no junk reaches the decoder
    assert len(dls.train_ds) + len(dls.valid_ds) == 40


def test_grey_16_bit_png(tmp_path):
    "0..65535 grey scales to 0..255 (PIL's own conversion clips everything above 255 to white)."
    a = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    got = np.asarray(open_food_image(tmp_path / "g.png"))
    assert got.shape == (8, 8, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.repeat(np.round(a / 257).astype(np.uint8)[..., None], 3, -1))


@pytest.mark.parametrize(
    "orientation,turn",
    [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)],
)
def test_exif_orientation(orientation, turn, tmp_path):
    "A picture stored turned, with the EXIF tag that says how to view it, loads the way it was taken."
    upright = np.zeros((16, 32, 3), np.uint8)
    upright[:, :16] = (250, 20, 20)  # red left half
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(turn).save(tmp_path / "p.png", exif=exif)
    got = np.asarray(open_food_image(tmp_path / "p.png"))
    np.testing.assert_array_equal(got, upright)


@pytest.mark.parametrize("as_", ["str", "Path", "PIL", "PIL grey"])
def test_predict_and_test_dl_take_paths_and_images(as_, mini):
    "learn.predict and dls.test_dl accept what a user has at hand, with the validation transforms."
    from fastai.learner import Learner

    dls = food_dls(mini, size=32, bs=4)
    f = mini / "val600x600/001/00100000.jpg"
    item = {"str": str(f), "Path": f, "PIL": Image.open(f), "PIL grey": Image.open(f).convert("L")}[as_]
    ref = dls.test_dl([[f, 1]], with_labels=True).one_batch()[0]  # the split's own [path, label] items
    x = dls.test_dl([item]).one_batch()[0]
    assert x.shape == (1, 3, 32, 32)
    if as_ != "PIL grey":
        torch.testing.assert_close(x, ref)
    torch.manual_seed(0)
    learn = Learner(dls, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4)))
    label, idx, probs = learn.predict(item)
    assert label in dls.vocab and probs.shape == (4,) and label == dls.vocab[int(idx)]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_file_names_match_after_unicode_normalisation(form, copy):
    "A name written one way on disk (macOS writes NFD) and the other way in the split list is the same file."
    other = "NFD" if form == "NFC" else "NFC"
    f = copy / "train600x600/000/00000000.jpg"
    f.rename(f.with_name(unicodedata.normalize(form, "café_1.jpg")))
    t = (
        (copy / "splits/train.txt")
        .read_text()
        .replace("000/00000000.jpg", "000/" + unicodedata.normalize(other, "café_1.jpg"))
    )
    (copy / "splits/train.txt").write_text(t)
    train = food_split(copy)["train"]
    hits = [p for p, _ in train if "caf" in p.name]
    # the name on disk
    assert len(hits) == 1 and hits[0].exists() and hits[0].name == unicodedata.normalize(form, "café_1.jpg")
    assert len(food_dls(copy, size=32, bs=4).train_ds) == len(train)


def test_recipe_choice_and_overrides(mini):
    dls = food_dls(mini, size=32)  # 28 training images of 32 px: small and low-resolution
    assert (dls.food["recipe"], dls.train.bs) == ("light", 32)
    assert dls.food["recipe_reason"] == "28 training images of 32x32 px: light (small and low-resolution set)"
    aug = dls.food["augmentation"]
    assert (aug.rand_augment, aug.re_prob, aug.crop_scale) == (None, 0.0, (0.8, 1.0))
    p = food_dls(mini, size=32, recipe="paper", re_prob=0.1)
    assert (p.food["recipe"], p.train.bs, p.food["augmentation"].re_prob) == ("paper", 128, 0.1)
    assert p.food["augmentation"].rand_augment == RECIPES["paper"].rand_augment
    assert p.food["recipe_reason"].endswith(": paper (as asked)")
    assert food_dls(mini, size=32, bs=4).train.bs == 4  # an explicit batch size wins over the recipe's
    assert choose_recipe(119_514, (600, 600))[0] == "paper" and choose_recipe(9_999, (600, 600))[0] == "light"
