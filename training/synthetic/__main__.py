"""``python -m training.synthetic``: the CLI (arguments in ``cli.py``)."""

from .cli import main

raise SystemExit(main())
