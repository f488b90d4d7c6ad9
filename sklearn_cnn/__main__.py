"""``python -m sklearn_cnn``: the same as the ``sklearn-cnn`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
