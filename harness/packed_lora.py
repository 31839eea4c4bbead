"""The packed LoRA layer: one peft ``lora.Linear`` serving every trial of a pack on a stacked batch.

Each trial of a pack (:mod:`harness.packing`) has its own peft LoRA adapter (``trial0`` ...) in
every layer it targets. A packed forward stacks one micro-batch per trial; the frozen base's
matmul runs once over the stack, and each trial's term ``B_k(A_k(dropout_k(x_k))) * scaling_k``
goes to its own rows only (:func:`routed_forward`).

Batched (the default, :data:`BATCHED`): the trials of a layer whose row counts are equal (and
whose adapters share a dtype) compute their terms with one batched matmul pair, as multi-LoRA
serving does (Punica's SGMV, S-LoRA; peft's own mixed-adapter batches loop over adapters
instead): the trials' ``A`` and ``B`` weights stacked each forward, ranks zero-padded to the
group's largest, ``h = bmm(x, A^T)``, ``out = bmm(h, B^T) * scaling`` (one scaling per trial),
and ``out`` added to the group's rows. Zero padding adds exact zeros to the term and gets no
gradient (the pads are constants, not parameters); stacking is differentiable, so each trial's
gradient reaches its own peft parameters. Dropout stays per trial, drawn from the trial's own
stream (:class:`TrialRng`) with the shape it draws alone. Looped (:data:`LOOPED`, or where
batching does not apply: one trial in the layer, rows that differ, a LoRA bias): one term after
another, as peft computes a single adapter. Both paths equal the trial alone to float rounding
(tests/test_packing.py); :attr:`Router.terms` counts the terms each path computed.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from . import adapters
from .schema import ConfigError, RunConfig

BATCHED, LOOPED = "batched", "looped"
# The LoRA path of packs started from this process (the bench's A/B switch; batched by default).
LORA_PATH_ENV = "HARNESS_PACK_LORA"


def lora_path() -> str:
    """The LoRA path :data:`LORA_PATH_ENV` asks for (:data:`BATCHED` unless set)."""
    path = os.environ.get(LORA_PATH_ENV) or BATCHED
    if path not in (BATCHED, LOOPED):
        raise ConfigError(f"{LORA_PATH_ENV}={path}: choose {BATCHED} or {LOOPED}")
    return path


class TrialRng:
    """One trial's stream of the global torch RNG (CPU and CUDA): swapped in around the trial's
    dropout, so its masks are the ones it draws when trained alone.

    On CUDA the stream is a generator state of its own, swapped in by reference
    (``graphsafe_set_state``: two calls per swap, no copy; an H100 pack of six spent 10-20% of
    an eager pass copying the states in and out as bytes, docs/benchmarks.md); a probe on that
    H100 drew the byte swap's masks and left the same state, and
    tests/test_packing.py checks the masks against the trial alone on each device. CPU
    generators swap only by copy (``get_rng_state``/``set_rng_state``)."""

    def __init__(self, seed: int | None = None):
        """The stream seeded with ``seed``, or (None) the global RNG's state now."""
        saved = None if seed is None else TrialRng()
        if seed is not None:
            torch.manual_seed(seed)
        self.cpu = torch.get_rng_state()
        self._cuda = _cuda_generator().clone_state() if torch.cuda.is_available() else None
        if saved is not None:  # seeding a trial's stream leaves the global RNG as it was
            torch.set_rng_state(saved.cpu)
            if saved._cuda is not None:
                torch.cuda.set_rng_state(saved.cuda)

    @property
    def cuda(self) -> torch.Tensor | None:
        """The CUDA stream as ``torch.cuda.get_rng_state`` bytes (a pack state saves these)."""
        return None if self._cuda is None else self._cuda.get_state()

    @cuda.setter
    def cuda(self, state: torch.Tensor | None) -> None:
        if state is None:
            self._cuda = None
            return
        self._cuda = _cuda_generator().clone_state()
        self._cuda.set_state(state)

    @contextlib.contextmanager
    def active(self, device: torch.device):
        if device.type == "cuda":
            generator = _cuda_generator(device)
            saved = generator.graphsafe_get_state()
            generator.graphsafe_set_state(self._cuda)  # the trial's draws now advance its own state
            try:
                yield
            finally:
                generator.graphsafe_set_state(saved)
        else:
            saved = torch.get_rng_state()
            torch.set_rng_state(self.cpu)
            try:
                yield
            finally:
                self.cpu = torch.get_rng_state()
                torch.set_rng_state(saved)


def _cuda_generator(device: torch.device | None = None) -> torch.Generator:
    """The default CUDA generator of ``device``, or (None, or no index) of the current device,
    CUDA started first. A swap passes its tensor's device, which has an index and CUDA started:
    its per-layer calls skip the start-up check."""
    if device is not None and device.index is not None:
        return torch.cuda.default_generators[device.index]
    torch.cuda.init()
    return torch.cuda.default_generators[torch.cuda.current_device()]


@dataclass
class Route:
    """Rows ``[start, stop)`` of the stacked batch belong to adapter ``name``; ``width``: the
    trial's own padded length (its LoRA term covers those positions: dropout then draws the
    mask of the shape it draws alone; the positions past it are padding, which no label or
    attention reads)."""

    name: str
    start: int
    stop: int
    rng: TrialRng | None = None
    width: int | None = None


class Router:
    """The routes of the packed forward under way; None: each layer's own peft forward (the
    active adapter on every row: scoring, saving). ``batched``: take the batched path where it
    applies; ``terms``: the LoRA terms (one trial in one layer's forward) each path computed, in
    eager forwards (compiled blocks do not count)."""

    def __init__(self, batched: bool = True):
        self.routes: list[Route] | None = None
        self.batched = batched
        self.terms = {BATCHED: 0, LOOPED: 0}

    @contextlib.contextmanager
    def route(self, routes: list[Route]):
        self.routes = routes
        try:
            yield
        finally:
            self.routes = None


def routed_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft ``lora.Linear.forward`` for a stacked batch: the base once over every row, then each
    route's LoRA term added to its own rows, in place (the forward copies no whole output), batched
    where :func:`batch_groups` allows and looped otherwise."""
    router = self._pack_router
    routes = router.routes
    if routes is None or self.disable_adapters or self.merged:
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    if self._pack_four_bit:
        # As peft's 4-bit layer: its terms are added to a copy (bitsandbytes' output is not
        # modified in place), each rounded to the output's dtype first where autocast is off.
        result = result.clone()
    mine = [route for route in routes if route.name in self.lora_A]
    groups, looped = batch_groups(self, mine) if router.batched else ([], mine)
    for group in groups:
        add_batched(self, x, result, group)
    for route in looped:
        add_looped(self, x, result, route)
    if not torch.compiler.is_compiling():  # a count in a compiled block would be a guard on its value: a recompile per call
        router.terms[BATCHED] += len(mine) - len(looped)
        router.terms[LOOPED] += len(looped)
    return result


def batch_groups(layer, routes: list[Route]) -> tuple[list[list[Route]], list[Route]]:
    """The routes one batched matmul pair can serve, in groups of two or more with equal rows
    and adapter dtype; and the rest, for the loop."""
    groups: dict[tuple, list[Route]] = {}
    rest = []
    for route in routes:
        if layer.lora_B[route.name].bias is not None:
            rest.append(route)  # a trained LoRA bias (peft's lora_bias) is no term of B(A(x)) alone
            continue
        # Equal rows: the group's inputs stack into one [trials, rows x width, in] tensor, a view
        # of the stacked batch where the group's rows are adjacent. Rows that differ (trials of
        # another micro-batch size) form their own groups.
        key = (route.stop - route.start, layer.lora_A[route.name].weight.dtype)
        groups.setdefault(key, []).append(route)
    batched = [group for group in groups.values() if len(group) > 1]
    rest += [group[0] for group in groups.values() if len(group) == 1]  # alone in its group: nothing to batch
    return batched, rest


def add_looped(layer, x: torch.Tensor, result: torch.Tensor, route: Route) -> None:
    """One trial's term on its rows, as peft computes a single adapter:
    ``B(A(dropout(x))) * scaling``, over its own width (dropout draws the mask it draws alone)."""
    lora_A, lora_B = layer.lora_A[route.name], layer.lora_B[route.name]
    index = (slice(route.start, route.stop), slice(0, route.width)) if _narrower(route, x) else slice(route.start, route.stop)
    sub = _dropout(layer, route, layer._cast_input_dtype(x[index], lora_A.weight.dtype))
    result[index] += _as_peft_adds(layer, lora_B(lora_A(sub)) * layer.scaling[route.name], result)


def gathered_term(layer, rows: torch.Tensor, route: Route, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """One trial's term on some of its positions, to add to ``out`` (one row per position):
    ``rows`` (its rows of the stack, ``[rows, width, in]``) dropped out as it draws alone (over
    its own width, from its own stream), then the positions ``index`` of them (flat over rows x
    width) through ``B(A(.)) * scaling``. The head's term where a pack computes its head on
    labelled positions alone (:mod:`harness.head_loss`): the dropped values at those positions
    are the ones peft's term sees alone, so the term is too."""
    lora_A, lora_B = layer.lora_A[route.name], layer.lora_B[route.name]
    dropped = _dropout_padded(layer, route, layer._cast_input_dtype(rows, lora_A.weight.dtype))
    picked = dropped.flatten(0, 1).index_select(0, index)
    return _as_peft_adds(layer, lora_B(lora_A(picked)) * layer.scaling[route.name], out)


def _as_peft_adds(layer, term: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    """The term as peft adds it: a 4-bit layer rounds it to the output's dtype first unless
    autocast is on; ``lora.Linear`` adds it as it is (rounded once, with the sum)."""
    return term.to(result.dtype) if layer._pack_four_bit and not torch.is_autocast_enabled() else term


def _narrower(route: Route, x: torch.Tensor) -> bool:
    """Whether the trial's sequences are narrower than the stack's (``x``: [rows, width, ...])."""
    return route.width is not None and x.dim() == 3 and route.width < x.shape[1]


def _drops(layer, route: Route) -> bool:
    """Whether the trial's dropout draws a mask here (training, ``p > 0``)."""
    dropout = layer.lora_dropout[route.name]
    return layer.training and isinstance(dropout, nn.Dropout) and dropout.p > 0


def _dropout(layer, route: Route, sub: torch.Tensor) -> torch.Tensor:
    """The trial's dropout of ``sub``, its mask drawn from the trial's own stream. Drawn over a
    contiguous copy: CUDA's dropout kernel maps its random numbers to elements one way for a
    contiguous tensor (the trial alone) and another for a strided one (a trial narrower than the
    stack), so a strided ``sub`` would draw another mask from the same state (CPU's does not)."""
    dropout = layer.lora_dropout[route.name]
    if _drops(layer, route) and route.rng is not None:
        with route.rng.active(sub.device):
            return dropout(sub.contiguous())
    return dropout(sub)


def add_batched(layer, x: torch.Tensor, result: torch.Tensor, group: list[Route]) -> None:
    """The group's terms with one batched matmul pair, each added to its trial's rows.

    The input of a trial without dropout is its rows of ``x`` at the stack's full width: the
    positions past its own width are padding, whose outputs no label, attention or gradient
    reads (right padding, masked keys), so the extra term there changes nothing the trial sees.
    A trial with dropout draws its mask over its own width, as alone; zeros pad it to the stack's
    width (a zero input adds a zero term)."""
    names = [route.name for route in group]
    weights_a = [layer.lora_A[name].weight for name in names]
    weights_b = [layer.lora_B[name].weight for name in names]
    n, rows = len(group), group[0].stop - group[0].start
    sub = layer._cast_input_dtype(x, weights_a[0].dtype)
    adjacent = all(route.start == group[0].start + i * rows for i, route in enumerate(group))
    span = slice(group[0].start, group[-1].stop)
    drops = any(_drops(layer, route) for route in group)
    in_graph = _in_graph_dropout(group)
    if adjacent and (in_graph or not drops):
        inputs = sub[span].reshape(n, -1, sub.shape[-1])  # a view of the stack: no copy
    else:
        # The trials' rows as one split of the stack: its backward is one concatenation, where a
        # slice per trial would each write a zero-filled gradient of the whole stack.
        parts = sub[span].split(rows) if adjacent else [sub[route.start:route.stop] for route in group]
        inputs = torch.stack([(part if in_graph else _dropout_padded(layer, route, part)).reshape(-1, sub.shape[-1])
                              for route, part in zip(group, parts, strict=True)])
    if drops and in_graph:
        inputs = _stacked_dropout(layer, names, inputs)
    pads_a, pads_b, rank = _constants(layer, names, weights_a, weights_b)
    stacked_a = torch.cat(_interleave(weights_a, pads_a)).view(n, rank, -1)
    stacked_b = torch.cat(_interleave(weights_b, pads_b), dim=1).view(weights_b[0].shape[0], n, rank).permute(1, 2, 0)
    out = torch.bmm(torch.bmm(inputs, stacked_a.transpose(1, 2)), stacked_b)
    out.mul_(_scales(layer, names, out))  # peft's `* scaling`: the float scaling per trial, rounded once to out's dtype
    out = _as_peft_adds(layer, out, result)
    if adjacent and span.start == 0 and span.stop == result.shape[0]:
        result += out.view(result.shape)  # every row: no slice, so autograd copies no gradient of the whole output
    elif adjacent:
        result[span] += out.view(result[span].shape)
    else:
        for route, term in zip(group, out, strict=True):
            result[route.start:route.stop] += term.view(result[route.start:route.stop].shape)


def _in_graph_dropout(group: list[Route]) -> bool:
    """Whether the group's dropout is drawn in a compiled graph (:func:`harness.pack_steps.compiled_routes`:
    no trial streams, every trial at the stack's width) rather than from each trial's own stream."""
    return all(route.rng is None and route.width is None for route in group)


def _stacked_dropout(layer, names: list[str], inputs: torch.Tensor) -> torch.Tensor:
    """Dropout of the group's stacked ``inputs`` ``[trials, rows, in]``, each trial's rows with
    its own probability (0 where it has none), as one operation: in a compiled block one kernel
    forward and one backward for the group, where a dropout per trial compiles and runs one per
    trial (a pack's compile time grew with its trials: on CPU, eight trials of the tiny model
    compiled 353 kernels in 33 s with dropout and 257 in 22 s without). Each element is kept with
    probability 1 - p and scaled by 1 / (1 - p), as ``nn.Dropout``; the mask is not the one the
    trial draws alone, as no mask drawn in a compiled graph is. The rates are the layer's held
    table where it has one (:func:`hold_trial_constants`)."""
    if hasattr(layer, "_pack_dropout"):
        p = _held(layer, layer._pack_dropout, names).view(-1, 1, 1)
    else:
        p = torch.tensor([_rate(layer, name) for name in names], dtype=torch.float32, device=inputs.device).view(-1, 1, 1)
    keep = torch.rand(inputs.shape, dtype=torch.float32, device=inputs.device) >= p
    return (inputs.float() * (keep / (1 - p))).to(inputs.dtype)  # rounded once, as nn.Dropout's kernel


def _dropout_padded(layer, route: Route, rows: torch.Tensor) -> torch.Tensor:
    """The trial's ``rows`` of the stack, dropped out where it draws dropout, at the stack's width."""
    if not _drops(layer, route):
        return rows
    if not _narrower(route, rows):
        return _dropout(layer, route, rows)
    dropped = _dropout(layer, route, rows[:, :route.width])
    return torch.nn.functional.pad(dropped, (0, 0, 0, rows.shape[1] - route.width))


def _interleave(weights: list[torch.Tensor], pads: list[torch.Tensor | None]) -> list[torch.Tensor]:
    return [t for w, pad in zip(weights, pads, strict=True) for t in ((w,) if pad is None else (w, pad))]


def _constants(layer, names: list[str], weights_a: list[torch.Tensor], weights_b: list[torch.Tensor]):
    """The zero pads that bring each trial's rank to the group's largest, and that rank; made
    once per layer and group (allocations saved on every later forward). Inside a compiled
    block they are made in the graph instead (constants the compiler folds): a tensor the graph
    made and the layer kept would, under CUDA graphs, live in memory the next replay overwrites."""
    weight = weights_a[0]
    cache = _constants_cache(layer)
    key = ("pads", tuple(names), weight.dtype, weight.device)
    if key not in cache:
        rank = max(w.shape[0] for w in weights_a)
        pads_a = [torch.zeros(rank - a.shape[0], a.shape[1], dtype=a.dtype, device=a.device)
                  if a.shape[0] < rank else None for a in weights_a]
        pads_b = [torch.zeros(b.shape[0], rank - b.shape[1], dtype=b.dtype, device=b.device)
                  if b.shape[1] < rank else None for b in weights_b]
        cache[key] = (pads_a, pads_b, rank)
    return cache[key]


def _scales(layer, names: list[str], out: torch.Tensor) -> torch.Tensor:
    """The group's scaling vector ``[trials, 1, 1]`` for the terms ``out``, made once per layer,
    group and dtype (as :func:`_constants`). In ``out``'s dtype where every trial's scaling is
    exact in it (alpha/r a power of two, as in most sweeps), float32 otherwise and in a compiled
    block (whose compiler fuses the product; there the layer's held table,
    :func:`hold_trial_constants`, so the graph does not fold the values in). Either way
    ``out * scales`` is the float product rounded once to ``out``'s dtype, as peft's
    ``* scaling`` (a Python float) computes it; in one dtype it is one plain kernel and its
    backward writes the gradient in that dtype, where a float32 vector makes the backward write
    a float32 gradient of the whole term and copy it back (on an H100, 2026-12-06: the costliest
    kernels of an eager pack with ``lm_head`` adapted, docs/benchmarks.md)."""
    if torch.compiler.is_compiling() and hasattr(layer, "_pack_scaling"):
        return _held(layer, layer._pack_scaling, names).view(-1, 1, 1)
    cache = _constants_cache(layer)
    key = ("scales", tuple(names), out.dtype, out.device)
    if key not in cache:
        scales = torch.tensor([float(layer.scaling[name]) for name in names], dtype=torch.float32,
                              device=out.device).view(-1, 1, 1)
        if not torch.compiler.is_compiling() and torch.equal(scales.to(out.dtype).float(), scales):
            scales = scales.to(out.dtype)
        cache[key] = scales
    return cache[key]


def hold_trial_constants(model: nn.Module) -> None:
    """Give each LoRA layer of ``model`` its trials' scalings and dropout rates as float32 tensors
    (one entry per adapter), for compiled blocks: the graph reads them as inputs where it would
    fold Python floats in as constants. So packs whose trials differ only in alpha or dropout
    compile the same graph, and a later pack finds it in inductor's on-disk cache (on CPU, a
    135M pack of five compiled its first pass in 23.3 s, and in 4.6 s from the cache). Plain
    attributes, which ``.to`` does not move or cast: call it after the model's last move."""
    for layer in lora_layers(model):
        names = list(layer.lora_A)
        device = layer.lora_A[names[0]].weight.device
        layer._pack_slot = {name: slot for slot, name in enumerate(names)}
        layer._pack_scaling = torch.tensor([float(layer.scaling[name]) for name in names],
                                           dtype=torch.float32, device=device)
        layer._pack_dropout = torch.tensor([_rate(layer, name) for name in names], dtype=torch.float32, device=device)


def _held(layer, table: torch.Tensor, names: list[str]) -> torch.Tensor:
    """The entries of ``names`` in one of the layer's held tables: a slice where their slots run
    in order (the usual group: every trial of the pack), else a gather."""
    slots = [layer._pack_slot[name] for name in names]
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return table[slots[0]:slots[0] + len(slots)]
    return table[slots]


def _rate(layer, name: str) -> float:
    """The adapter's dropout probability (0 where it has no dropout)."""
    dropout = layer.lora_dropout[name]
    return float(dropout.p) if isinstance(dropout, nn.Dropout) else 0.0


def _constants_cache(layer) -> dict:
    """The layer's cache of its groups' constants; a fresh one each time inside a compiled block."""
    return {} if torch.compiler.is_compiling() else layer.__dict__.setdefault("_pack_constants", {})


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """peft's LoRA layers of ``model``: over a 16/32-bit linear, or a bitsandbytes 4-bit one
    (QLoRA nf4/fp4, :func:`four_bit`); int8 and other bases are refused."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    other = [type(m).__name__ for m in layers if not (isinstance(m, LoraLinear) or four_bit(m))]
    if other:
        raise ConfigError(f"adapter.targets: packed trials adapt linear and 4-bit layers only, not {other[0]}")
    return layers


def four_bit(layer: nn.Module) -> bool:
    """Whether ``layer`` is peft's LoRA over a bitsandbytes 4-bit linear (``lora.bnb.Linear4bit``)."""
    try:
        from peft.tuners.lora.bnb import Linear4bit
    except ImportError:  # peft without bitsandbytes has no such class
        return False
    return isinstance(layer, Linear4bit)


def attach_router(model: nn.Module, batched: bool = True) -> Router:
    """Route every peft LoRA linear of ``model`` through :func:`routed_forward` (``batched``:
    on the batched path where it applies). Vanilla LoRA only: peft computes its variants (DoRA's
    magnitude over the norm of ``W + s BA``, and the others) in ways neither path reproduces."""
    import types

    router = Router(batched)
    for layer in lora_layers(model):
        variants = [name for name in getattr(layer, "lora_variant", {}) if name in layer.lora_A]
        if variants:
            raise ConfigError(f"pack: adapter {variants[0]} is a peft LoRA variant; packed trials train plain LoRA")
        layer._pack_router = router
        layer._pack_four_bit = four_bit(layer)  # read per forward: a constant, not an import in a compiled block
        layer.forward = types.MethodType(routed_forward, layer)
    return router


def add_adapters(model: nn.Module, runs: list[RunConfig], names: list[str],
                 rng_after_base: torch.Tensor | None) -> tuple[nn.Module, list[TrialRng]]:
    """Give the base ``model`` one peft LoRA adapter per run, each built as that run alone builds
    it: the torch RNG seeded with its seed (and, where building the base drew from it, at the
    state the base left) before peft initialises its weights. Every adapter is trainable.
    Returns the peft model and, per run, the RNG where its adapter's init left it."""
    from peft import get_peft_model

    after_init = []
    for run in runs:
        adapters.check_targets(run.adapter, model)
    for param in model.parameters():
        param.requires_grad_(False)
    peft_model = None
    for run, name in zip(runs, names, strict=True):
        torch.manual_seed(run.seed)
        if rng_after_base is not None:
            torch.set_rng_state(rng_after_base)
        config = adapters.lora_config(run.adapter)
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
        after_init.append(TrialRng())
    train_mode(peft_model, names)
    return peft_model, after_init


class TrialParams:
    """One trial's trainable parameters, named as the trial alone names them (peft's adapter
    ``default``), for :func:`harness.module.build_optimizer`."""

    def __init__(self, model: nn.Module, name: str):
        tag = f".{name}."
        self.params = [(n.replace(tag, ".default."), p) for n, p in model.named_parameters() if tag in n]

    def named_parameters(self):
        return iter(self.params)

    def parameters(self):
        return [p for _, p in self.params]


def train_mode(model: nn.Module, names: list[str]) -> None:
    """Training mode, and every trial's adapter trainable (peft's ``set_adapter`` for scoring
    leaves only the active adapter with gradients)."""
    model.train()
    for param_name, param in model.named_parameters():
        if any(f".{name}." in param_name for name in names):
            param.requires_grad_(True)

