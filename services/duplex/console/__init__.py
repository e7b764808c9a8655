"""The operator console: a Starlette + Jinja2 + HTMX app at :8000 (`python -m duplex.console`)
that shows the fleet from Redis (workers, GPUs, sessions) and steers it (routing, drain,
load / unload, "speak on this worker") behind a sign-in with the admin token."""
