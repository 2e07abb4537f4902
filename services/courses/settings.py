from shared.registry import COURSES
from shared.settings import ServiceSettings


class CoursesSettings(ServiceSettings):
    service_name: str = COURSES.name
    port: int = COURSES.port
    # A lesson holds up to 200,000 characters, which JSON may spell as 6-byte escapes.
    max_body_bytes: int = 4 * 1024 * 1024
