"""The simulator's WebRTC side: the Realtime and GPT-Live signalling routes on an aiohttp app, with
aiortc as the answering peer (app.py), the media between RTP and the WebSocket sessions
(media.py) and the ICE restriction every peer here is built under (loopback.py)."""
