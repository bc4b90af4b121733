"""Load testing against written latency SLAs.

The Locust users (`locustfile.py`, `capacity_shape.py`) and the pieces around them
that need no Locust: SLA schema, payload pool, verdict, the Prometheus histogram
diff, charts, and the runner that starts Locust as a subprocess. Load tests are a
client of the gateway, so they live outside it: `service/` never imports this package.
"""
