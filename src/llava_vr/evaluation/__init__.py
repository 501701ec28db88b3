# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Evaluating LLaVA-VR with lmms-eval (0.7): the model classes lmms-eval loads by entry point (`lmms_model.py`, both
back ends), the token budget set at load time (`budget.py`), the project's own document benchmark in lmms-eval's task
format (`task_builder.py` writes it; YAML + `utils.py` under `tasks/`) and the per-budget comparison
(`compare_budgets.py`). Importing this package imports neither torch nor lmms-eval."""

from .budget import budget_grid

__all__ = ["budget_grid"]
