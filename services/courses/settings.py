from shared.settings import ServiceSettings


class CoursesSettings(ServiceSettings):
    service_name: str = "courses"
    port: int = 8004
    # A lesson holds up to 200,000 characters, which JSON may spell as 6-byte escapes.
    max_body_bytes: int = 4 * 1024 * 1024
