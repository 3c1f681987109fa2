"""A gevent-powered Django service for IO-heavy work."""
