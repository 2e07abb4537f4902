from services.webhooks.settings import WebhooksSettings
from shared.service import serve

if __name__ == "__main__":
    serve("services.webhooks.app:create_app", WebhooksSettings())
