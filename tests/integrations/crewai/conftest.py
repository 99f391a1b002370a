"""CrewAI test setup: no network. Set before CrewAI is imported (conftest loads before the test modules).

CrewAI 1.15 reads OTEL_SDK_DISABLED / CREWAI_DISABLE_TELEMETRY / CREWAI_DISABLE_TRACKING (anonymous
telemetry, crewai_core/telemetry.py), CREWAI_TRACING_ENABLED=false (trace upload and its consent prompt,
events/listeners/tracing/utils.py) and CREWAI_DISABLE_VERSION_CHECK (the PyPI version lookup).
"""

from __future__ import annotations

import os

for _name, _value in {
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}.items():
    os.environ[_name] = _value
