"""Single-image super-resolution: the architectures, their training data, training and tuning."""
