"""Triggers: services that invoke guests (the HTTP server is the first, `cron/` the second).

Nothing here is imported by the capabilities or the runtime, so the layering
stays `cli → host → triggers → runtime`.
"""
