"""spk: speaker recognition with recurrent neural networks, as a Kaldi-style recipe toolkit."""

__version__ = "0.1.0"
