"""``python -m uqkd``: the same as the ``uqkd`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
