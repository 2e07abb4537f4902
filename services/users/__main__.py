from services.users.settings import UsersSettings
from shared.service import serve

if __name__ == "__main__":
    serve("services.users.app:create_app", UsersSettings())
