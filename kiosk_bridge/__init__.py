"""kiosk_bridge: terminates the kiosks' WebRTC (aiortc) and carries their audio to
Asterisk as RTP. In this version: the process skeleton (settings, heartbeat, clean
shutdown); the media bridge arrives with the remote-window work."""
