"""mmsam: multi-modal semantic segmentation with frozen Segment Anything models."""
__version__ = "0.1.0"
