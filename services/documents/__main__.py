"""`python -m services.documents [serve|migrate]`: see shared.cli."""

from shared.cli import main
from shared.registry import DOCUMENTS

if __name__ == "__main__":
    main(DOCUMENTS)
