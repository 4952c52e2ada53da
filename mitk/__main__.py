"""``python -m mitk``."""

from mitk.cli import main

if __name__ == "__main__":
    main()
