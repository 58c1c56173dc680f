"""``spk serve``: the speaker database and a trained model behind an HTTP API with keys, limits and an audit trail.

``app`` builds the FastAPI application (routes, limits, the inference pool), ``auth`` owns
API keys (format, hashing, scopes) and per-key rate limits, ``access_log`` bounds request
bodies and writes one JSON line per request, and ``web/`` is the page the server serves at
``/``. Uploads are decoded by :func:`spk.audio.read_audio_bytes`.
"""
