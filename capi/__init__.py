"""capi: the server-side path for Meta conversions (a Google Cloud Function)."""

__version__ = "0.3.0"
