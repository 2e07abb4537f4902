"""The edge: routing, token checks, rate limits, errors, request ids, streaming."""

import os
import shutil
import tempfile

from gateway.settings import GatewaySettings
from shared.service import serve

if __name__ == "__main__":
    settings = GatewaySettings()
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its metrics here, so that /metrics on any worker shows the sum.
        metrics_dir = tempfile.mkdtemp(prefix="lyceum-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        serve("gateway.app:create_app", settings, workers=settings.workers)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
