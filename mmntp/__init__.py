"""mmntp: one decoder-only transformer over one multimodal token sequence."""

__version__ = "0.1.0"
