"""``spk serve``: the speaker database and a trained model behind an HTTP API with keys, limits and an audit trail.

``app`` builds the FastAPI application, ``auth`` owns API keys (format, hashing, scopes)
and per-key rate limits, ``uploads`` turns an uploaded file into a waveform within the
configured limits, ``access_log`` writes one JSON line per request, and ``web/`` is the
page the server serves at ``/``.
"""
