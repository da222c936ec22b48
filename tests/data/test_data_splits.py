"""Split lists: parsing, the compact split directory, the shipped standard splits, the generator."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ssseg.data.cli import register
from ssseg.data.splits import (ALL, Pair, apportion, generate_split, load_split, parse_amount,
                               parse_list, read_list, shipped_split_dir, split_names, write_list)
from ssseg.errors import UserError

from support.data_trees import folder_tree

SHIPPED = {  # split -> labeled count; the pools hold 10,582 and 2,975 pairs
    "pascal": {"92": 92, "183": 183, "366": 366, "732": 732, "1464": 1464, "1_16": 662,
               "1_8": 1323, "1_4": 2646, "u2pl_1_16": 662, "u2pl_1_8": 1323, "u2pl_1_4": 2646},
    "cityscapes": {"1_16": 186, "1_8": 372, "1_4": 744, "1_2": 1488, "1_30": 100},
}
POOL = {"pascal": 10582, "cityscapes": 2975}
VAL = {"pascal": 1449, "cityscapes": 500}


def pool_of(n: int) -> list[Pair]:
    return [Pair(f"img/{i}.jpg", f"mask/{i}.png", f"pool.txt:{i + 1}") for i in range(n)]


def test_parse_blank_lines_missing_final_newline_and_image_only_lines():
    pairs = parse_list("a.jpg a.png\n\n  \nb.jpg b.png\nc.jpg", "l.txt")
    assert [p.key for p in pairs] == [("a.jpg", "a.png"), ("b.jpg", "b.png"), ("c.jpg", None)]
    assert pairs[1].where == "l.txt:4"


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg a.png\nb.jpg b.png extra\n")
    with pytest.raises(UserError, match=r"l\.txt:2: expected '<image path> <mask path>'"):
        read_list(tmp_path / "l.txt")
    (tmp_path / "l.txt").write_text("a.jpg a.png\nb.jpg")
    with pytest.raises(UserError, match=r"l\.txt:2: .*image path alone"):
        read_list(tmp_path / "l.txt")
    assert len(read_list(tmp_path / "l.txt", masks=False)) == 2
    with pytest.raises(UserError, match="missing.txt: cannot read"):
        read_list(tmp_path / "missing.txt")


def test_write_then_read_round_trips(tmp_path):
    pairs = [Pair("a.jpg", "a.png", ""), Pair("b.jpg", None, "")]
    write_list(tmp_path / "l.txt", pairs)
    assert [p.key for p in read_list(tmp_path / "l.txt", masks=False)] == [p.key for p in pairs]


def test_split_directory_unlabeled_is_pool_minus_labeled_unless_listed(tmp_path):
    folder_tree(tmp_path)
    splits = tmp_path / "splits"
    lists = load_split(splits, "2")
    pool = read_list(splits / "pool.txt")
    assert [p.key for p in lists.labeled] == [p.key for p in pool[:2]]
    assert [p.key for p in lists.unlabeled] == [p.key for p in pool[2:]]
    (splits / "2" / "unlabeled.txt").write_text("images/im4.png\n")
    assert [p.key for p in load_split(splits, "2").unlabeled] == [("images/im4.png", None)]
    everything = load_split(splits, ALL)
    assert len(everything.labeled) == len(pool) and everything.unlabeled is None


def test_unknown_split_lists_the_valid_ones(tmp_path):
    folder_tree(tmp_path)
    with pytest.raises(UserError, match=r"unknown split '3' .*valid: 2, all"):
        load_split(tmp_path / "splits", "3")


@pytest.mark.parametrize("family", sorted(SHIPPED))
def test_shipped_splits_are_pool_minus_labeled(family):
    split_dir = shipped_split_dir(family)
    assert split_names(split_dir) == sorted(SHIPPED[family]) + [ALL]
    assert (split_dir.parent / "LICENSE-UniMatch-splits").is_file()
    pool = {p.key for p in read_list(split_dir / "pool.txt")}
    assert len(pool) == POOL[family]
    val = {p.key for p in read_list(split_dir / "val.txt")}
    assert len(val) == VAL[family] and not val & pool
    for split, count in SHIPPED[family].items():
        assert not (split_dir / split / "unlabeled.txt").exists()
        lists = load_split(split_dir, split)
        labeled = [p.key for p in lists.labeled]
        unlabeled = [p.key for p in lists.unlabeled]
        assert len(labeled) == len(set(labeled)) == count, split
        assert set(labeled) <= pool and set(unlabeled) == pool - set(labeled), split
        assert len(unlabeled) == POOL[family] - count, split


def test_amounts():
    assert parse_amount("662") == 662
    assert parse_amount("0.125") == parse_amount("1/8") == 0.125
    with pytest.raises(UserError, match="neither a count"):
        parse_amount("eight")


def test_generate_counts_fractions_and_seeds():
    pool = pool_of(100)
    labeled, unlabeled = generate_split(pool, 10, seed=0)
    assert len(labeled) == 10 and len(unlabeled) == 90
    assert {p.key for p in labeled} | {p.key for p in unlabeled} == {p.key for p in pool}
    assert labeled == generate_split(pool, 10, seed=0)[0]
    assert labeled != generate_split(pool, 10, seed=1)[0]
    assert len(generate_split(pool, 0.25, seed=0)[0]) == 25
    with pytest.raises(UserError, match=r"valid: \[1, 100\]"):
        generate_split(pool, 101, seed=0)
    with pytest.raises(UserError, match=r"valid: \(0, 1\)"):
        generate_split(pool, 1.5, seed=0)


def test_stratified_draw_keeps_rare_classes():
    pool = pool_of(100)
    presence = np.zeros((100, 3), dtype=bool)
    presence[:, 0] = True
    presence[:10, 1] = True  # rare: 10 images
    presence[50:90, 2] = True
    for seed in range(5):
        labeled, _ = generate_split(pool, 20, seed, presence)
        rows = [int(p.image.split("/")[1].split(".")[0]) for p in labeled]
        assert len(rows) == 20
        assert presence[rows, 1].sum() == 2 and presence[rows, 2].sum() == 8


@given(st.lists(st.integers(1, 50), min_size=1, max_size=10), st.data())
def test_apportion_sums_to_k_within_sizes(sizes, data):
    sizes = np.array(sizes)
    k = data.draw(st.integers(0, int(sizes.sum())))
    quota = apportion(sizes, k)
    assert quota.sum() == k and (quota <= sizes).all() and (quota >= 0).all()


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_cli_split_from_list_and_stratified_from_root(tmp_path, capsys):
    tree = folder_tree(tmp_path / "ds", n_train=8)
    out = tmp_path / "out"
    assert run_cli("split", "--list", str(tmp_path / "ds/splits/pool.txt"), "--labeled", "1/4",
                   "--seed", "3", "--out", str(out)) == 0
    labeled, unlabeled = read_list(out / "labeled.txt"), read_list(out / "unlabeled.txt")
    assert len(labeled) == 2 and len(unlabeled) == 6
    assert "wrote 2 labeled and 6 unlabeled" in capsys.readouterr().out
    assert run_cli("split", "--root", str(tmp_path / "ds"), "--labeled", "3", "--stratify",
                   "--out", str(out)) == 0
    assert {p.key[0] for p in read_list(out / "labeled.txt")} <= {
        line.split()[0] for line in tree["train"]}
    with pytest.raises(UserError, match="--stratify reads the masks"):
        run_cli("split", "--list", str(out / "labeled.txt"), "--labeled", "1", "--stratify",
                "--out", str(out))
