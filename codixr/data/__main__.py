"""``python -m codixr.data summary DIR [--kind mimic|iu|public|auto] [--tokenizer PATH]``."""

from __future__ import annotations

import logging
import sys

from codixr.data.summary import main
from codixr.errors import CoDiXRError

if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoDiXRError as exc:
        logging.getLogger("codixr.data").error("%s", exc)
        sys.exit(2)
