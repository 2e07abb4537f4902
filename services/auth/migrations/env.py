from services.auth import revocations  # noqa: F401 (its table is one of auth's)
from services.auth.models import Base
from shared.migrations import run_env

run_env(Base.metadata)
