"""docs/reproducing.md against the paper recipes: every row of its settings tables must be the
value the recipe (with the overrides its "Recipe:" line names) resolves to, and every paper recipe
has a table; every row of its iterations table follows the released loader of its method
(ssseg.recipe.protocols.released_iters_per_epoch for the DistributedSampler codes) over the shipped
split lists, at the GPUs of the recipe's own torchrun line; the iteration tables in the recipes'
comments are those rows; and the repository names no absolute path of a machine. Recipes are
loaded and their plugins configured; no model is built."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ssseg.data.splits import load_split, shipped_split_dir
from ssseg.plugin_manager import check_recipe
from ssseg.recipe.load import load_recipe, load_yaml, read_yaml
from ssseg.recipe.protocols import released_iters_per_epoch
from ssseg.recipe.structure import unstructure

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reproducing.md"
PAPER = REPO / "recipes" / "paper"
SPLIT_FAMILY = {"pascal_voc": "pascal", "cityscapes": "cityscapes"}
GPUS_KEY = "torchrun --nproc_per_node"  # the settings rows whose value is the recipe's launch line
# iterations per epoch of each method's released loader, at |U| unlabeled images, B per GPU, P GPUs
LOADERS = {
    "DistributedSampler": released_iters_per_epoch,        # iMAS, U2PL, FixMatch, UniMatch
    "max_samples // batch_size": lambda u, b, p: u // (b * p),  # CPS: config.niters_per_epoch
    "iters_per_epoch 1000": lambda u, b, p: 1000,          # CutMix-Seg: --iters_per_epoch=1000
}


def number(cell: str) -> int:
    """An integer written with thousands separators ("10,490")."""
    return int(cell.replace(",", ""))


def tables(text: str) -> list[tuple[str | None, tuple[str, ...], str, list[list[str]]]]:
    """(recipe path, overrides, section, rows) of every table, with the nearest "Recipe: `path`
    [with `key=value` ...]" line above it in its section (None if there is none)."""
    blocks, recipe, section, table = [], None, "", []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if table:
            blocks.append((*(recipe or (None, ())), section, table))
        table = []
        match = re.match(r"Recipe: `([^`]+)`(.*)", line)
        if match:
            _, with_, rest = match.group(2).partition(" with ")
            recipe = (match.group(1), tuple(re.findall(r"`([^`]+)`", rest)) if with_ else ())
        elif line.startswith("## "):
            recipe, section = None, line[3:].strip()
    return blocks


TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = [(p, o, t[2:]) for p, o, _, t in tables(TEXT) if p is not None and "recipe key" in t[0]]
ITERATION_ROWS = [dict(zip(t[0], row)) for _, _, section, t in tables(TEXT)
                  if section == "Iterations per epoch" and "iterations per epoch" in t[0] for row in t[2:]]


def plain(value):
    """Tuples as lists, so YAML lists compare equal to attrs tuples."""
    return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def extends_chain(path: Path) -> list[Path]:
    """``path`` and the files it extends, nearest first."""
    chain = [path]
    while "extends" in (data := read_yaml(chain[-1])):
        chain.append((chain[-1].parent / data["extends"]).resolve())
    return chain


def recipe_gpus(path: Path) -> int:
    """The process count of the first ``torchrun --nproc_per_node N`` (or ``--nproc-per-node``)
    in the comments of ``path`` or of the files it extends."""
    for file in extends_chain(path):
        match = re.search(r"torchrun --nproc[-_]per[-_]node[ =](\d+)", file.read_text(encoding="utf-8"))
        if match:
            return int(match.group(1))
    raise AssertionError(f"{path}: no torchrun --nproc_per_node line in it or in what it extends")


def resolved(path: Path, recipe, plugins, key: str):
    """The value ``key`` resolves to: plugin parameters from the validated plugin config (defaults
    included), the GPUs from the recipe's torchrun line, everything else from the resolved recipe."""
    if key == GPUS_KEY:
        return recipe_gpus(path)
    parts = key.split(".")
    if parts[0] == "plugins" and len(parts) == 3:
        return getattr(plugins[parts[1]].config, parts[2])
    value = unstructure(recipe)
    for part in parts:
        value = value[part]
    return value


def iteration_row(path: Path, split: str) -> dict[str, str]:
    """The row of the iterations table for ``split`` of ``path`` or of a file it extends."""
    for file in extends_chain(path):
        name = f"`{file.relative_to(REPO).as_posix()}`"
        rows = [r for r in ITERATION_ROWS if r["recipe"] == name and r["split"] == f"`{split}`"]
        if rows:
            assert len(rows) == 1, (name, split)
            return rows[0]
    raise AssertionError(f"docs/reproducing.md: no row of the iterations table for {path} at split {split!r}")


def comment_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the iterations table in ``path``'s comments: under a header naming split,
    labeled, unlabeled, iters/epoch and optim.iters, each row a split and its numbers."""
    rows, header = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.lstrip("#").split()
        if line.startswith("#") and {"split", "iters/epoch", "optim.iters"} <= set(words):
            header = words[: words.index("optim.iters") + 1]
        elif header and line.startswith("#") and len(words) >= len(header) and re.fullmatch(r"[\d,]+", words[1]):
            rows.append(dict(zip(header, words)))
        else:
            header = None
    return rows


# -- the settings tables -----------------------------------------------------------------------

def test_every_paper_recipe_has_a_settings_table():
    documented = {path for path, _, _ in BLOCKS}
    # staged recipes (ST++) state each stage's length in their comments; tests/strategies/test_self_training.py
    shipped = {f"recipes/paper/{p.name}" for p in PAPER.glob("*.yaml") if not load_recipe(p).stages}
    assert {"cps", "u2pl", "cutmix"} <= {name.split("/")[-1].split("_")[0] for name in shipped}
    assert shipped <= documented, sorted(shipped - documented)


@pytest.mark.parametrize("path, overrides, rows", BLOCKS,
                         ids=[f"{p.split('/')[-1]}{'+' if o else ''}{'+'.join(o)}" for p, o, _ in BLOCKS])
def test_every_row_is_the_recipes_value_and_the_length_is_the_iterations_table(path, overrides, rows):
    recipe = load_recipe(REPO / path, list(overrides))
    plugins = check_recipe(recipe).plugins
    checked = 0
    for setting, _released, key, value in rows:
        if key == "—":
            continue
        assert key.startswith("`") and value.startswith("`"), f"{path}: row {setting!r} needs `key` and `value`"
        expected = load_yaml(value.strip("`"))
        assert plain(resolved(REPO / path, recipe, plugins, key.strip("`"))) == plain(expected), \
            f"{path} {' '.join(overrides)}: {setting} ({key}) is not {value}"
        checked += 1
    assert checked, f"{path}: a settings table without one checked row"
    row = iteration_row(REPO / path, recipe.data.split)
    assert recipe.optim.iters == number(row["optim.iters"]), (path, overrides, row)


# -- iterations per epoch ----------------------------------------------------------------------------

@pytest.mark.parametrize("unlabeled, batch, gpus, last_step", [
    (9118, 4, 4, 569), (10399, 4, 4, 649), (10490, 4, 4, 654), (10216, 4, 4, 637), (9850, 4, 4, 614),
    (9920, 4, 4, 619), (9259, 4, 4, 577), (7936, 4, 4, 495),
    (2789, 4, 4, 173), (2603, 4, 4, 161), (2231, 4, 4, 138), (1487, 4, 4, 92), (2789, 2, 8, 173), (1487, 2, 8, 92)])
def test_released_iterations_are_the_last_step_index_of_the_released_imas_logs_plus_one(unlabeled, batch, gpus,
                                                                                           last_step):
    """iMAS prints step len(loader_u) − 1 of every epoch (logs-semi/voc-r101/fine-class/*-2.log,
    voc-r101/{662,1323,2646}, citys, citys-os8): 569 at 1,464 labels, where ⌊|U|/(B·P)⌋ is 569."""
    assert released_iters_per_epoch(unlabeled, batch, gpus) == last_step + 1


def test_the_iterations_table_covers_every_paper_recipe():
    rows = {r["recipe"].strip("`") for r in ITERATION_ROWS}
    for path in (p for p in PAPER.glob("*.yaml") if not load_recipe(p).stages):  # staged: per stage
        assert any(f.relative_to(REPO).as_posix() in rows for f in extends_chain(path)), path


@pytest.mark.parametrize("row", ITERATION_ROWS, ids=[f"{r['recipe'].strip('`').split('/')[-1]}:{r['split'].strip('`')}"
                                                      for r in ITERATION_ROWS])
def test_every_iterations_row_is_the_released_loader_over_the_shipped_split(row):
    path, split = REPO / row["recipe"].strip("`"), row["split"].strip("`")
    default = load_recipe(path)
    recipe = load_recipe(path, [f'data.split="{split}"'])
    lists = load_split(shipped_split_dir(SPLIT_FAMILY[recipe.data.dataset]), split)
    unlabeled, batch, gpus = len(lists.unlabeled), recipe.data.batch_unlabeled, recipe_gpus(path)
    assert (number(row["labeled"]), number(row["unlabeled"])) == (len(lists.labeled), unlabeled)
    assert (number(row["batch per GPU"]), number(row["GPUs"])) == (batch, gpus)
    per_epoch = LOADERS[row["loader"].strip("`")](unlabeled, batch, gpus)
    assert number(row["iterations per epoch"]) == per_epoch
    assert number(row["optim.iters"]) == number(row["epochs"]) * per_epoch
    if split == default.data.split:
        assert default.optim.iters == number(row["optim.iters"]), "the recipe's own split runs its length"


@pytest.mark.parametrize("path", sorted(PAPER.rglob("*.yaml")), ids=lambda p: p.relative_to(PAPER).as_posix())
def test_the_recipes_comment_tables_are_the_documented_rows(path):
    rows = comment_rows(path)
    name = f"`{path.relative_to(REPO).as_posix()}`"
    documented = [r for r in ITERATION_ROWS if r["recipe"] == name]
    assert len(rows) == len(documented), f"{name}: {len(rows)} rows in its comments, {len(documented)} in the docs"
    for row in rows:
        doc = iteration_row(path, row["split"].strip('"'))
        for column in ("labeled", "unlabeled", "iters/epoch", "optim.iters"):
            if column in row:
                want = doc["iterations per epoch" if column == "iters/epoch" else column]
                assert number(row[column]) == number(want), (name, row["split"], column)


# -- no machine's paths ------------------------------------------------------------------------------

# the roots of a machine's own files (homes, workspaces, mounts): a path below them names one machine
MACHINE_ROOTS = "work|home|root|Users|mnt|scratch|shared|data|gpfs|lustre|nfs|private|media|srv"
ABSOLUTE = re.compile(rf"(?<![\w.~$/:@-])/(?:{MACHINE_ROOTS})/|\b[A-Z]:\\\\?[A-Za-z]")


@pytest.mark.slow  # asks git for the tracked files
def test_no_file_names_an_absolute_path_of_a_machine():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    found = []
    for name in filter(None, files):
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        found += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                  if ABSOLUTE.search(line)]
    assert not found, "\n".join(found)
