"""CoDiXR Studio: `python app.py` serves the app on http://127.0.0.1:7860 (see `python app.py --help`).

Once installed (`pip install .`), the `codixr-studio` command does the same (both call ``codixr.app.main``).

Thin on purpose: everything lives in `codixr.app`. Also the entry point of the Hugging Face Space.
"""

from __future__ import annotations

from codixr.app import main

if __name__ == "__main__":
    main()
