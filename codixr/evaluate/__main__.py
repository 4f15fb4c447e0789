"""``python -m codixr.evaluate``: see :mod:`codixr.evaluate.cli`."""

from codixr.evaluate.cli import main

raise SystemExit(main())
