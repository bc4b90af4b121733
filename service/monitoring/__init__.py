"""What the gateway watches about the models themselves (not only their latency)."""
