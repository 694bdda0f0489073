"""``python -m sync_observability.cli``: the ``sync-obs`` command without its script."""

from sync_observability.cli import main

if __name__ == "__main__":
    main()
