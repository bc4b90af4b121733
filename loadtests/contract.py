"""Names shared by the runner and the locustfiles it starts as a subprocess.

The locustfiles read their SLA from the environment rather than from extra
command-line flags, so the same files work unchanged under plain `locust`,
`modelgate loadtest`, and the docker-compose master/worker services.
"""

from __future__ import annotations

SLA_ENV = "MODELGATE_SLA"
"""Path of the SLA file the locustfile builds its user classes from."""

TARGETS_ENV = "MODELGATE_TARGETS"
"""Optional comma-separated target names (e.g. `rest digits_cnn`) to run; default: all."""

CAPACITY_STEPS_ENV = "MODELGATE_CAPACITY_STEPS"
"""Where the capacity shape appends one JSON line per finished step."""

API_KEY_ENV = "MODELGATE_API_KEY"
"""The gateway's API key (its own setting's name); sent as `Authorization: Bearer` when set."""

WARMUP_OVER = "modelgate: warm-up over, statistics reset"
"""Logged by the locustfile when the warm-up ends and the measured window starts."""
