"""A module that raises on import: ``objective.env_id: tests.raising_module:Any-v0`` must be a
one-line config error naming the id, the module and the exception (not a traceback)."""

raise RuntimeError("raising_module: broken at import time")
