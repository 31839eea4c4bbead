"""What a compiled decoder block keeps for backward (``trainer.compile``), found by tracing it.

torch.compile's inductor partitions each compiled block's forward and backward with a min-cut
that recomputes cheap elementwise work (norms, SiLU, dropout inside ``torch.utils.checkpoint``,
casts) in backward instead of saving it. A compiled block therefore keeps less than the eager
count of :func:`harness.estimate.activation_bytes`, which was 17-34% over the measured peaks of
compiled runs on an H100/H200 (docs/benchmarks.md). Rather than a second hand count, this traces
one block as ``trainer.compile`` compiles it (dynamo, then AOTAutograd with inductor's
decompositions and its min-cut partitioner) on the meta device, and reads what the partitioned forward
hands to backward. No kernel is generated or run and no memory is allocated: the trace stops
at the partition.

Attention is traced as the target device runs it: PyTorch picks sdpa's kernel at run time by
device, and on the meta device it would pick the math path (a T x T matrix per head) that no
GPU runs. So sdpa is replaced, for the trace only, by the kernel the device would take with the
padding mask that training batches carry: the memory-efficient kernel on CUDA, the flash kernel
on CPU, the mask converted to an additive bias and the key/value heads repeated to the query
heads as transformers does when a mask is given.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import nn

from .models import decoder_blocks
from .schema import RunConfig

TRACED_ATTENTION = "harness_traced_sdpa"


def not_traced_reason(run: RunConfig) -> str | None:
    """Why the compiled blocks of ``run`` are not traced (the estimate then counts them as
    eager, an over-estimate), or None when they are."""
    t = run.trainer
    if not t.compile:
        return "blocks not compiled"
    if t.gradient_checkpointing:
        return "gradient checkpointing"
    if t.liger_kernels:
        return "liger kernels (Triton; not traceable on the meta device)"
    if t.precision.endswith("-mixed"):
        return "autocast (not applied to meta tensors)"
    if run.quant.mode == "int8":
        return "int8 base (bitsandbytes keeps each input; not modelled in the trace)"
    if run.model.attn_implementation not in ("sdpa", "eager"):
        return f"attention {run.model.attn_implementation}"
    return None


def saved_bytes(model: nn.Module, run: RunConfig, device: str = "cuda") -> int | None:
    """Bytes that one compiled decoder block of ``model`` keeps for backward for one micro-batch
    of ``run`` (``micro_batch_size`` x ``max_seq_len`` tokens, with a padding mask), as
    inductor partitions it for ``device`` (``cuda`` or ``cpu``); None where the block cannot be
    traced (:func:`not_traced_reason`, or a trace that fails).

    ``model``: the run's model with its adapter and speed switches applied, on the meta
    device, in the run's compute dtype. The block's input counts; the weights, the attention
    mask and the rotary tables do not (the estimate counts weights elsewhere; the others are
    shared by every block).
    """
    if not_traced_reason(run) is not None:
        return None
    blocks = decoder_blocks(model)
    if not blocks:
        return None
    try:
        return _trace(model, blocks[0], run.trainer.micro_batch_size, run.data.max_seq_len, device)
    except Exception:  # noqa: BLE001 - a model the trace cannot follow is counted as eager
        return None


def _trace(model: nn.Module, block: nn.Module, batch: int, length: int, device: str) -> int:
    """Run ``model``'s forward on meta tensors with ``block`` compiled by a backend that stops at
    the partition, and sum the partitioned forward's saved tensors."""
    config = model.config
    hidden = config.hidden_size
    dtype = next(p.dtype for p in block.parameters() if p.dtype.is_floating_point)
    embeds = torch.empty(batch, length, hidden, device="meta", dtype=dtype, requires_grad=True)
    found: dict = {"input_shape": tuple(embeds.shape)}
    mask = torch.ones(batch, 1, length, length, device="meta", dtype=torch.bool)
    # The backend raises once it has counted, so dynamo caches nothing for the block's forward
    # (trainer.compile compiles it later in the same process). fullgraph: a block dynamo splits
    # is several partitions, which this does not add up; it is counted as eager.
    block.forward = torch.compile(type(block).forward.__get__(block), backend=_stop_at_partition(found),
                                  dynamic=False, fullgraph=True)
    try:
        with _attention(config, device), torch.enable_grad():
            model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    except Exception:  # noqa: BLE001 - the backend stops the forward once it has what it needs
        if "bytes" not in found:
            raise
    finally:
        del block.forward
    return found["bytes"]


class _Partitioned(Exception):
    """Raised by the trace's partitioner once it has counted: nothing is compiled or run."""


def _stop_at_partition(found: dict):
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    def partition(joint, inputs, *, num_fwd_outputs, **kwargs):
        # inductor's partitioner, without the joint-graph passes inductor runs first (pattern
        # rewrites that need a real device; on the meta device they leave a graph it cannot cut)
        forward, _ = min_cut_rematerialization_partition(joint, inputs, num_fwd_outputs=num_fwd_outputs, **kwargs)
        found["bytes"] = _saved(forward, num_fwd_outputs, found["input_shape"])
        raise _Partitioned

    def backend(graph, example_inputs):
        return aot_module_simplified(graph, example_inputs, fw_compiler=_unreachable, partition_fn=partition,
                                     decompositions=select_decomp_table())

    return backend


def _unreachable(graph, example_inputs):
    raise _Partitioned


def _saved(forward: torch.fx.GraphModule, num_fwd_outputs: int, input_shape: tuple) -> int:
    """Bytes of the tensors the partitioned ``forward`` returns for backward: its outputs past the
    block's own, less its inputs (weights, mask and rotary tables), except the block's input (the
    placeholder of ``input_shape``: the graph's values carry no ``requires_grad`` to tell it by)."""
    inputs = [n for n in forward.graph.nodes if n.op == "placeholder"]
    hidden_input = next((n for n in inputs if _shape(n) == input_shape), None)
    output = next(n for n in forward.graph.nodes if n.op == "output").args[0]
    total = 0
    for node in output[num_fwd_outputs:]:
        if not isinstance(node, torch.fx.Node) or (node.op == "placeholder" and node is not hidden_input):
            continue
        total += _bytes(node)
    return total


def _shape(node: torch.fx.Node) -> tuple | None:
    value = node.meta.get("val")
    return tuple(int(s) for s in value.shape) if isinstance(value, torch.Tensor) else None


def _bytes(node: torch.fx.Node) -> int:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return 0
    return math.prod(int(s) for s in value.shape) * value.element_size()


@contextlib.contextmanager
def _attention(config, device: str):
    """sdpa as ``device`` runs it with a mask, for the trace (the model's own implementation
    otherwise, e.g. eager attention)."""
    if config._attn_implementation != "sdpa":
        yield
        return
    from transformers import AttentionInterface

    AttentionInterface.register(TRACED_ATTENTION, functools.partial(_masked_sdpa, device=device))
    config._attn_implementation = TRACED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def _masked_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, *,
                 device: str, **kwargs):
    """transformers' sdpa attention with a 4-D boolean mask, calling the kernel ``device``'s
    dispatcher picks for it: key/value heads repeated to the query heads (transformers does so
    when a mask is given), the mask turned into an additive bias (as sdpa does), then CUDA's
    memory-efficient kernel or the CPU's flash kernel."""
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bias = torch.zeros_like(attention_mask, dtype=query.dtype).masked_fill(attention_mask.logical_not(), float("-inf"))
    if device in ("cuda", "gpu"):
        bias = bias.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        out = torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout, False,
                                                                     scale=scaling)[0]
    else:
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout, False,
                                                                         attn_mask=bias, scale=scaling)[0]
    return out.transpose(1, 2).contiguous(), None
