"""The folder dataset: any class count, classes.yaml metadata, image-only unlabeled lists."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssseg.data.registry import build_data
from ssseg.data.folder import colormap
from ssseg.errors import UserError
from ssseg.recipe.schema import DataConfig

from support.data_trees import H, W, folder_tree


def config(root, split="2", **kw) -> DataConfig:
    return DataConfig(dataset="folder", root=str(root), split=split, crop=6, **kw)


def test_round_trip_and_metadata(tmp_path):
    tree = folder_tree(tmp_path, classes=3)
    data = build_data(config(tmp_path))
    assert data.num_classes == 3 and data.class_names == tuple(tree["names"])
    assert data.palette == colormap(3)
    for i in range(len(data.val)):
        sample = data.val[i]
        assert sample["image"].shape == (3, H, W)
        assert torch.equal(sample["mask"], torch.from_numpy(tree["masks"][sample["name"]]).long())
    batch = next(iter(DataLoader(data.unlabeled, batch_size=2)))
    assert batch["image"].shape == (2, 3, 6, 6) and batch["valid"].shape == (2, 6, 6)


def test_palette_and_custom_paths(tmp_path):
    folder_tree(tmp_path, classes=2)
    (tmp_path / "meta.yaml").write_text("names: [sky, ground]\npalette: [[0, 0, 255], [0, 255, 0]]\n")
    (tmp_path / "splits").rename(tmp_path / "lists")
    data = build_data(config(tmp_path, options={"classes": "meta.yaml", "split_dir": "lists"}))
    assert data.class_names == ("sky", "ground") and data.palette == ((0, 0, 255), (0, 255, 0))


def test_unlabeled_list_may_give_images_alone(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "masks/im4.png").unlink()  # an unlabeled image without a mask is fine
    (tmp_path / "splits/2/unlabeled.txt").write_text("images/im3.png\nimages/im4.png")
    data = build_data(config(tmp_path))
    assert len(data.unlabeled) == 2 and data.unlabeled[1]["image"].shape == (3, 6, 6)


@pytest.mark.parametrize("text, message", [
    (None, "classes.yaml: cannot read the class list"),
    ("names: [a, b\n", "classes.yaml: not valid YAML"),
    ("labels: [a]\n", "classes.yaml: expected a mapping with keys 'names'"),
    ("names: []\n", "classes.yaml: names: expected a list of 1 to 255"),
    ("names: [a, b]\npalette: [[1, 2, 3]]\n", r"classes.yaml: palette: expected 2 colours"),
])
def test_class_file_errors_name_the_file(tmp_path, text, message):
    folder_tree(tmp_path)
    if text is None:
        (tmp_path / "classes.yaml").unlink()
    else:
        (tmp_path / "classes.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        build_data(config(tmp_path))


def test_malformed_split_line_names_file_and_line(tmp_path):
    folder_tree(tmp_path)
    (tmp_path / "splits/2/labeled.txt").write_text("images/im0.png masks/im0.png\n\nimages/im1.png a b")
    with pytest.raises(UserError, match=r"labeled\.txt:3: expected '<image path> <mask path>'"):
        build_data(config(tmp_path))
