"""`python -m services.courses [serve|migrate]`: see shared.cli."""

from shared.cli import main
from shared.registry import COURSES

if __name__ == "__main__":
    main(COURSES)
