"""``python -m esvo``: the ``esvo`` command."""

from esvo.cli import main

raise SystemExit(main())
