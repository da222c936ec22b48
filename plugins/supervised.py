"""Supervised only: the labeled data and the supervised loss, no unlabeled views.

For a fair comparison with a semi-supervised recipe, give it the same total batch
(``data.batch_labeled`` = labeled + unlabeled batch of the other recipe) and report its iterations.
"""

from __future__ import annotations

import attrs

from ssseg.api import Plugin, UserError, hookimpl


class Supervised(Plugin):
    """Trains on labeled data only."""

    name = "supervised"
    requires_hookspec = 5

    @attrs.frozen
    class Config:
        """No parameters."""

    @hookimpl
    def validate(self, recipe) -> None:
        """Refuse a recipe that would load unlabeled batches it never uses."""
        if recipe.data.batch_unlabeled:
            raise UserError("plugins.supervised: trains on labeled data only; set "
                            "data.batch_unlabeled: 0 (and, to compare fairly, data.batch_labeled to "
                            "the semi-supervised recipe's labeled + unlabeled batch)")
