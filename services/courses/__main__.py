from services.courses.settings import CoursesSettings
from shared.service import serve

if __name__ == "__main__":
    serve("services.courses.app:create_app", CoursesSettings())
