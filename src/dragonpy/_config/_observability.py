"""The ``log`` and ``tracing`` sections, shared by the daemon and the scheduler."""

from __future__ import annotations

from typing import Final

import attrs

from ._fields import one_of, setting

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")


@attrs.frozen
class LogSettings:
    level: str = setting(
        "info",
        f"Messages at this level and above go to stderr: {', '.join(LOG_LEVELS)}.",
        dragonfly="(the --log-level option)",
        reload=True,
        validator=one_of(LOG_LEVELS),
    )
    format: str = setting(
        "text",
        "text: one readable line per message; json: one JSON object per line "
        "(time, level, logger, message and the message's fields), for collectors.",
        reload=True,
        validator=one_of(LOG_FORMATS),
    )


@attrs.frozen
class TracingSettings:
    otlp_endpoint: str | None = setting(
        None,
        "Export traces to this OTLP/HTTP collector, like http://jaeger:4318 (needs "
        "the dragonpy[otlp] extra); null: no export.",
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
        dragonfly="tracing.endpoint",
    )
