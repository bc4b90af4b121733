"""Load testing against written latency SLAs.

The pieces that do not need Locust live here (SLA schema, payload pool, the
verdict, the Prometheus histogram diff, charts, the runner that starts Locust
as a subprocess). The Locust user classes themselves are in `loadtests/`.
"""
