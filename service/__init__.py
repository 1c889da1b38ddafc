"""The translation service: onnxruntime inference behind a LibreTranslate-compatible and a native HTTP API."""

import os

# onnxruntime (1.32 on Linux) starts a telemetry client when it loads: it writes a device id and an event
# database under ~/.cache/Microsoft/DeveloperTools/ and may upload events. A self-hosted service keeps its
# requests' traces to itself and must run on a read-only root filesystem: off unless the operator sets it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
