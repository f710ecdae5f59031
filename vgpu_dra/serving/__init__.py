"""Adapter: the HTTP(S) server shared by the webhook and the scheduler extender."""
