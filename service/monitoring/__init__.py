"""Watching what the models see: input features, reference profiles and live drift."""
