"""`python -m services.webhooks [serve|migrate]`: see shared.cli."""

from shared.cli import main
from shared.registry import WEBHOOKS

if __name__ == "__main__":
    main(WEBHOOKS)
