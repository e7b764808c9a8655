"""Client transports: each turns its wire into calls on the session layer (WebSocket, WebRTC)."""
