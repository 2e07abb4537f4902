"""`python -m services.users [serve|migrate]`: see shared.cli."""

from shared.cli import main
from shared.registry import USERS

if __name__ == "__main__":
    main(USERS)
