"""The `modelgate` command line, above the gateway, training and load-test packages."""
