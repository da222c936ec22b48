"""The datasets a recipe's ``data.dataset`` may name, listed here with explicit imports (no module
registers itself as a side effect of being imported): the generated embedded dataset, and the
datasets read from split lists (VOC, Cityscapes, a folder of images and masks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ssseg.data.base import DataBundle
from ssseg.data.cityscapes import cityscapes_source
from ssseg.data.embedded import build_embedded
from ssseg.data.folder import ListedSource, build_listed, folder_source
from ssseg.data.mmseg import mmseg_source
from ssseg.data.voc import voc_source
from ssseg.errors import UserError
from ssseg.recipe.structure import ConfigError

# name -> builder(cfg: DataConfig, needs) -> DataBundle, for datasets generated in memory
GENERATED: dict[str, Callable[..., DataBundle]] = {"embedded": build_embedded}
# name -> factory(root, options) -> ListedSource, for datasets read from split lists
LISTED: dict[str, Callable[[Path, dict[str, Any]], ListedSource]] = {
    "pascal_voc": voc_source, "cityscapes": cityscapes_source, "folder": folder_source,
    "mmseg": mmseg_source}


def dataset_names() -> list[str]:
    """Names accepted by ``data.dataset``."""
    return sorted({*GENERATED, *LISTED})


def source_for(dataset: str, root: str | Path | None, options: dict[str, Any] | None) -> ListedSource:
    """The :class:`ListedSource` of a list-described dataset at ``root``."""
    if dataset not in LISTED:
        raise UserError(f"dataset {dataset!r} is not read from split lists; valid: {', '.join(sorted(LISTED))}")
    if root is None:
        raise ConfigError("data.root", f"dataset {dataset!r} reads files: set it to the dataset's "
                                       "root directory")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError("data.root", f"{root} is not a directory")
    return LISTED[dataset](root, dict(options or {}))


def build_data(cfg, needs: str = "train") -> DataBundle:
    """Build the :class:`DataBundle` named by ``cfg.dataset``, with the datasets ``needs`` names
    (one of :data:`ssseg.data.base.NEEDS`)."""
    if cfg.dataset in GENERATED:
        return GENERATED[cfg.dataset](cfg, needs)
    if cfg.dataset in LISTED:
        return build_listed(cfg, source_for(cfg.dataset, cfg.root, cfg.options), needs)
    raise ConfigError("data.dataset", f"unknown dataset {cfg.dataset!r}; valid: {', '.join(dataset_names())}")
