"""Client transports: each turns its wire into `Session` calls (WebSocket now, WebRTC later)."""
