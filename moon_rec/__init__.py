"""moon_rec: an open implementation of MOON multimodal item representations."""

__version__ = "0.1.0"
