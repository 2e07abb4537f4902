from shared.settings import ServiceSettings


class UsersSettings(ServiceSettings):
    service_name: str = "users"
    port: int = 8002
