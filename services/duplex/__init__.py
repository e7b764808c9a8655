"""Realtime duplex voice appliance."""
