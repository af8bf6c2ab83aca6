"""mmsam: multi-modal semantic segmentation with frozen Segment Anything models."""
__version__ = "0.1.0"


def load(folder, *, checkpoint=None, device="cpu", merge=False):  # type: ignore[no-untyped-def]
    """Load a model folder written by ``mmsam export``: see :func:`mmsam.deploy.load`."""
    from mmsam.deploy import load as _load

    return _load(folder, checkpoint=checkpoint, device=device, merge=merge)
