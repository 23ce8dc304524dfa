"""ActionCLIP: video-text action recognition on CLIP (arXiv 2109.08472), as a library."""
__version__ = "0.1.0"
