from shared.settings import ServiceSettings


class CoursesSettings(ServiceSettings):
    service_name: str = "courses"
    port: int = 8004
