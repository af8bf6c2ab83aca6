"""``torch.compile`` of a method: regional (each frozen encoder block) or the whole method.

Regional compilation is PyTorch's recommended way for a stack of identical transformer blocks
(tutorial "Reducing torch.compile cold start compilation time with regional compilation"): every
block is compiled in place with ``nn.Module.compile``, blocks of one shape share the compiled code,
so the first-step cost is that of one block, not of the whole network. In-place compilation keeps
the module tree, hence the state-dict keys (no ``_orig_mod.`` prefix), and the compiled call still
runs the block's forward hooks (``run_capturing``). The modality-aware adapters read the
``ContextVar`` layout (``mmsam.adapters.layout``) during the block's forward; dynamo traces that
read and guards on it (the stacked names, the presence tensor as a graph input), so a new layout
recompiles rather than reusing a wrong graph (checked in ``tests/unit/test_compile.py``).
"""
from __future__ import annotations

import inspect
from typing import Any, Literal, Mapping

import torch
from torch import nn

from mmsam.errors import ConfigError

CompileScope = Literal["blocks", "method"]
SCOPES = ("blocks", "method")
# torch.compile's own options that a config may set (``model`` is the module itself)
_COMPILE_KWARGS = tuple(p for p in inspect.signature(torch.compile).parameters if p != "model")

# Every block of an encoder runs the same forward code, and dynamo keeps one cache per code object:
# windowed / global attention, Hiera's stage widths and pooling, the first block's input without grad,
# training / inference and a second batch size each add an entry. Hiera-T reaches torch's default
# limit (8) in its first validation, after which dynamo silently runs the blocks eagerly.
BLOCKS_RECOMPILE_LIMIT = 64

__all__ = ["CompileScope", "compile_encoder", "compile_options", "encoder_blocks"]


def encoder_blocks(method: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a method's frozen image encoder (SAM ViT ``blocks``, SAM 2 Hiera ``trunk.blocks``)."""
    encoder = method.backbone.image_encoder
    blocks = getattr(encoder, "blocks", None)
    if blocks is None:
        blocks = encoder.trunk.blocks
    return list(blocks)


def compile_options(value: bool | Mapping[str, Any] | None, *, key: str = "model.compile") -> dict[str, Any] | None:
    """The ``compile`` option as keyword arguments of :func:`compile_encoder`, or ``None`` when off.

    ``True`` means ``{"scope": "blocks"}`` with torch's defaults; a mapping holds ``scope`` plus any
    argument of ``torch.compile`` (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options``).
    Bad keys or values are refused here, before any model is built.
    """
    if value is None or value is False:
        return None
    if value is True:
        return {"scope": "blocks"}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be true, false or a mapping of torch.compile options, got {value!r}")
    opts = dict(value)
    scope = opts.setdefault("scope", "blocks")
    if scope not in SCOPES:
        raise ConfigError(f"{key}.scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    unknown = sorted(set(opts) - {"scope", *_COMPILE_KWARGS})
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; accepted: scope, {', '.join(_COMPILE_KWARGS)}")
    try:  # torch checks mode / backend / options when torch.compile is called; compiling happens only at the first call
        torch.compile(nn.Identity(), **{k: v for k, v in opts.items() if k != "scope"})
    except Exception as e:  # noqa: BLE001  (RuntimeError / ValueError / InvalidBackend, each a long message)
        raise ConfigError(f"{key}: {str(e).strip().splitlines()[0]}") from None
    return opts


def check_inductor(device: torch.device | str, backend: Any = "inductor") -> None:
    """Inductor turns CPU graphs into C++: without a compiler the first step would fail deep inside torch."""
    if backend != "inductor" or torch.device(device).type != "cpu":
        return
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            "model.compile: torch.compile's inductor backend needs a C++ compiler on CPU (g++, or $CXX) and found none "
            f"({str(e).strip().splitlines()[0]}); install one, set model.compile.backend: aot_eager, or model.compile: false"
        ) from None


def compile_encoder(method: nn.Module, *, scope: CompileScope = "blocks", device: torch.device | str | None = None,
                    **compile_kwargs: Any) -> int:
    """Compile ``method`` in place; returns the number of modules compiled (0 when already compiled).

    ``scope="blocks"``: each encoder block (:func:`encoder_blocks`), regional compilation;
    ``"method"``: the whole ``method`` as one module (more graph breaks: the batch is a dict and the
    encode step branches on which modalities are present). ``compile_kwargs`` go to ``torch.compile``;
    for blocks, ``recompile_limit`` defaults to :data:`BLOCKS_RECOMPILE_LIMIT`.
    ``device``: where the model will run, to refuse inductor on a CPU without a C++ compiler.
    Calling it again is a no-op (Lightning calls ``configure_model`` once per fit / validate / test).
    """
    if scope not in SCOPES:
        raise ConfigError(f"model.compile.scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if device is not None:
        check_inductor(device, compile_kwargs.get("backend", "inductor"))
    from mmsam.backbones.grad_checkpointing import is_grad_checkpointed

    if any(is_grad_checkpointed(b) for b in encoder_blocks(method)):
        # its checkpoint(context_fn=...) replays the modality layout in the recompute, which dynamo cannot trace
        raise ConfigError("model.compile cannot be combined with model.grad_checkpointing (torch.compile does not "
                          "trace the checkpoint's layout-replaying context_fn); turn one of them off")
    targets = encoder_blocks(method) if scope == "blocks" else [method]
    if scope == "blocks":
        compile_kwargs.setdefault("recompile_limit", BLOCKS_RECOMPILE_LIMIT)
    n = 0
    for module in targets:
        if module._compiled_call_impl is None:  # nn.Module.compile stores the compiled call here
            module.compile(**compile_kwargs)
            n += 1
    return n
