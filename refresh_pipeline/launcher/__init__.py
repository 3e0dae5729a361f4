"""Running the refresh on an EC2 worker: the Lambda that starts it and the entrypoint that stops it."""
