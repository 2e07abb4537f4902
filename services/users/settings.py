from shared.registry import USERS
from shared.settings import ServiceSettings


class UsersSettings(ServiceSettings):
    service_name: str = USERS.name
    port: int = USERS.port
