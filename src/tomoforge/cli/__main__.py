"""``python -m tomoforge.cli``: the same as the ``tomoforge`` command."""

from .main import main

main()
