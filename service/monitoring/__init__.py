"""What the gateway watches about the models themselves: input features, reference profiles,
live drift and out-of-distribution scores."""
