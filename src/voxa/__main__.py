"""``python -m voxa``: the same as the ``voxa`` command."""

from voxa.cli import main

main()
