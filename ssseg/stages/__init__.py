"""Staged training: a recipe's ``stages`` run one after another, each a whole training run in
``<out>/stages/<name>/``, with a dataset pass over the unlabeled set between them (phase ``stage``
of the step table). ST and ST++ are built on it (plugins/self_training.py)."""
