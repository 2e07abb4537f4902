"""`python -m services.chat [serve|migrate]`: see shared.cli."""

from shared.cli import main
from shared.registry import CHAT

if __name__ == "__main__":
    main(CHAT)
