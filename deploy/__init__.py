"""make deploy: capi on Google Cloud in one command (docs/deploy.md)."""
