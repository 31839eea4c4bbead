"""Scoring a pack's trials together: one stacked forward serves every trial's adapter.

After a pack trains, each trial is scored by lm-eval as it would be alone
(:func:`harness.evaluate.score`), one trial after another. The trials of a pack share their
data, hence their held-out split, so trials that score the same tasks send lm-eval the same
loglikelihood requests. :class:`PackLM` is lm-eval's HFLM whose loglikelihood, asked by the
first of them, runs each batch of requests once for all of them, stacked: trial k's copy of the
batch goes to trial k's adapter (:mod:`harness.packed_lora`), and the other trials' results are
kept (:class:`JointScores`) until lm-eval asks for them in their own turn, which it then gets without
tokenizing the requests again. Everything else about
scoring (building the tasks, metrics, aggregation, standard errors) is lm-eval's, per trial.

Per request the arithmetic is HFLM's ``_loglikelihood_tokens``: the same ordering and batches
(its Collator, with the one-token-continuation cache), left truncation, right padding, log-softmax
and greedy match. On CPU a trial's results equal its results alone bit for bit
(tests/test_packing.py); on a GPU the matmuls and attention over K times the rows, and the
batched LoRA term, may round differently (a greedy match can flip on a near tie). Why: a 135M
model's forward on a GPU is bound by host overhead (about the same time whatever the rows,
docs/benchmarks.md), so K trials cost about one trial's forwards. Only trials with equal eval
settings are scored together (:func:`harness.pack_finish.joint_scores`). A stacked pass that runs out
of memory (it holds K trials' logits) is run again over half as many trials at a time, and from
then on passes stack that many (on an 80 GB GPU shared by three packs, seven trials' logits did
not fit, 2026-12-05); only a pass of one trial out of memory leaves every trial from then on to be
scored alone.
Requests of other kinds (``generate_until``, and a seq2seq model) are HFLM's own, on the trial's
adapter alone.

:class:`BatchedLM`, PackLM's base and every run's scorer alone (:func:`harness.evaluate.score`),
is HFLM with that per-request arithmetic done a batch at a time on the device: one copy of the
batch's inputs and continuation tokens in (without waiting), and the answers of every batch out
in one copy at the end, where HFLM's loop waits on the device three times a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The helpers as HFLM's module imports them (their home moved between lm-eval releases).
from lm_eval.models.huggingface import HFLM, Collator, pad_and_concat
from tqdm import tqdm

from .packed_lora import Route, Router

log = logging.getLogger(__name__)


class JointScores:
    """The loglikelihood results of the pack's trials ``names`` (adapters of one model, routed by
    ``router``), computed for all of them at once, per batch size and request list."""

    def __init__(self, router: Router, names: list[str]):
        self.router = router
        self.names = list(names)
        self.results: dict[tuple, list[list[tuple[float, bool]]]] = {}
        self.forwards = 0  # stacked forward passes run
        self.stack = len(self.names)  # trials per stacked forward; halved by a pass out of memory
        self.served: set[str] = set()  # the trials that got results from a joint pass
        self.alone: set[str] = set()  # the trials that had requests answered alone (after out of memory)
        self.out_of_memory = False  # a pass of one trial ran out of memory: every trial from then on alone

    def lm(self, name: str):
        """A factory of the :class:`PackLM` of trial ``name`` (HFLM's keyword arguments)."""
        return lambda **kwargs: PackLM(joint=self, name=name, **kwargs)


def _sort_key(request: tuple) -> tuple:
    """HFLM's order: longest first (its ``_collate``)."""
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def _context_key(request: tuple) -> list[int]:
    """HFLM's group of one-token continuations: context plus all but the last continuation token."""
    return request[-2] + request[-1][:-1]


@dataclass
class Answers:
    """One batch's answers of one trial, on the device until read: per answer its request
    (None for a grouped one-token continuation's copy, as lm-eval's cache returns it), the
    continuation's summed log-likelihood and whether it is greedy."""

    requests: list
    sums: torch.Tensor
    matches: torch.Tensor


class BatchedLM(HFLM):
    """HFLM whose loglikelihood answers a batch of requests with one copy of their continuation
    tokens to the device, and a list of requests with one copy of its answers back (one wait on
    the device for the list); HFLM's own loop waits on the device three times a request, and on
    a GPU that other runs are training on each wait is a turn on it.
    The same batches, order and arithmetic as HFLM's ``_loglikelihood_tokens`` (its Collator, with
    the one-token-continuation cache; left truncation, right padding, log-softmax, greedy match),
    so the same answers (tests/test_evaluate.py). Requests of other kinds, a seq2seq model and
    ``batch_size=auto`` are HFLM's own."""

    def __init__(self, *args, batch_tokens: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_tokens = batch_tokens

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal" or not isinstance(self.batch_size, int):
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        order = Collator(requests, sort_fn=_sort_key, group_by="contexts" if self.logits_cache else None,
                         group_fn=_context_key)
        parts = []
        with self._progress(requests, disable_tqdm) as bar:
            for chunk in self._batches(order):
                inputs, lengths = self._inputs(chunk)
                logprobs = F.log_softmax(self._model_call(inputs), dim=-1, dtype=self.softmax_dtype)
                parts.append(self._answers(order, chunk, logprobs, lengths))
                del logprobs
                self._release()
                bar.update(len(parts[-1].requests))
        return order.get_original(self._read(parts, hook=True))

    def _batches(self, order: Collator):
        """``order``'s batches (its requests longest first): ``batch_size`` requests each, as HFLM
        cuts them; with ``batch_tokens``, as many as hold that many tokens padded (requests times
        the batch's first, widest, input; at least one). Why: a 135M forward on a GPU costs about
        the same whatever its rows (host-bound), and most probe requests are a few dozen tokens:
        a budget of the held-out task's 16 rows of 512 tokens scores the four probes in 5
        forwards instead of 208, its largest batch allocating as before."""
        if self.batch_tokens is None:
            return order.get_batched(n=self.batch_size)
        batch = {"first": 0, "size": 0}

        def size(i: int, requests) -> int:  # the Collator asks after each request
            if i >= batch["first"] + batch["size"]:  # request i opens a batch
                _, context, continuation = requests[i]
                width = min(len(context) + len(continuation), self.max_length + 1) - 1  # as _inputs cuts it
                batch.update(first=i, size=max(1, self.batch_tokens // max(1, width)))
            return batch["size"]

        return order.get_batched(n=self.batch_size, batch_fn=size)

    def _release(self) -> None:
        """With ``batch_tokens`` on a GPU, hand a batch's freed memory back to the device. Why: in
        `rag2` (H100, 2026-12-07) packs' scoring reserved 2-4x what it allocated, up to 34 GiB
        (allocated as with batches of 16 requests, reserved 1.1-2.1x then), and a pack beside one
        ran out of memory. Such batches each hold nearly the budget, in sizes that differ a
        little, which the caching allocator likely kept a block apiece for. A wait on the device
        a batch (a few a request list)."""
        if self.batch_tokens is not None and torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()

    def _progress(self, requests, disable: bool = False) -> tqdm:
        """HFLM's progress bar over the requests (on stderr)."""
        return tqdm(total=len(requests), disable=disable or self.rank != 0, desc="Running loglikelihood requests")

    def _inputs(self, chunk) -> tuple[torch.Tensor, list[int]]:
        """HFLM's causal inputs of a chunk: context and continuation cut from the left to the
        model's length, the last token dropped, padded on the right; and each one's length. Built
        on the host and copied to the device once (HFLM copies each request's, a wait each)."""
        inputs = []
        for _, context, continuation in chunk:
            assert context and continuation and len(continuation) <= self.max_length  # as HFLM asserts
            inputs.append(torch.tensor((context + continuation)[-(self.max_length + 1):][:-1], dtype=torch.long))
        lengths = [len(i) for i in inputs]
        return self._to_device(pad_and_concat(max(lengths), inputs, padding_side="right")), lengths

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        from .batches import to_device

        return to_device(tensor, self.device)

    def _answers(self, order: Collator, chunk, logits: torch.Tensor, lengths: list[int]) -> Answers:
        """HFLM's per-request answers of one trial's log-probabilities, left on the device: the
        continuation's summed log-likelihood and whether it is the greedy continuation (the
        grouped one-token continuations of a context included, as ``order`` returns them).

        The same operations on the same tensors as HFLM's loop, so the same values, with the
        batch's tokens copied in once (without waiting); nothing waits on the device until
        :meth:`_read` copies every batch's answers out at once (on a GPU other runs train on,
        each wait is a turn on it)."""
        pending = []  # (request, continuation tokens, greedy tokens, log-probs) per answer, in lm-eval's order
        width = max(lengths)
        for (request, context, continuation), row, length in zip(chunk, logits, lengths, strict=True):
            # HFLM's context length: the input's, and any virtual tokens the model put before it
            row = self._select_cont_toks(row, contlen=len(continuation), inplen=length + row.shape[0] - width).unsqueeze(0)
            greedy = row.argmax(dim=-1)
            pending += [(request, tokens, greedy, cached) for request, tokens, cached in
                        order.get_cache(req_str=request, cxt_toks=context, cont_toks=continuation, logits=row)]
        flat = self._to_device(torch.tensor([t for _, tokens, _, _ in pending for t in tokens], dtype=torch.long))
        sums, matches, start = [], [], 0
        for _, tokens, greedy, cached in pending:
            own = flat[start:start + len(tokens)].unsqueeze(0)
            start += len(tokens)
            matches.append((greedy[:, -own.shape[1]:] == own).all())
            sums.append(torch.gather(cached, 2, own.unsqueeze(-1)).sum())
        return Answers([request for request, *_ in pending], torch.stack(sums), torch.stack(matches))

    def _read(self, parts: list[Answers], hook: bool = False) -> list[tuple[float, bool]]:
        """The ``(log-likelihood, greedy)`` answers of ``parts`` (batches' answers on the device),
        in their order, copied out in one wait. ``hook``: hand each answer to lm-eval's request
        cache, as HFLM does (a pack's joint answers are the first trial's to hand over)."""
        if not parts:
            return []
        sums = torch.cat([part.sums for part in parts])
        matches = torch.cat([part.matches for part in parts]).to(sums.dtype)  # 0 or 1, exact: one copy for both
        sums, matches = torch.stack([sums, matches]).tolist()
        answers = [(total, bool(match)) for total, match in zip(sums, matches, strict=True)]
        if hook:
            requests = [request for part in parts for request in part.requests]
            for request, answer in zip(requests, answers, strict=True):
                if request is not None:
                    self.cache_hook.add_partial("loglikelihood", request, answer)
        return answers


class PackLM(BatchedLM):
    """HFLM for trial ``name`` of a pack whose loglikelihood requests are answered for every
    trial of ``joint`` at once (see the module's docstring)."""

    def __init__(self, *, joint: JointScores, name: str, **kwargs):
        super().__init__(**kwargs)
        self.joint = joint
        self.index = joint.names.index(name)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        """HFLM's, except that a trial whose requests the joint pass already answered reads its
        answers without tokenizing the requests again (one trial's tokenizing is a few seconds of
        host time on the embedded tasks, paid once per pack, not once per trial)."""
        joint = self.joint
        key = (self.batch_size, self.batch_tokens, "texts", tuple(request.args for request in requests))
        if key in joint.results and not joint.out_of_memory:
            joint.served.add(joint.names[self.index])
            return joint.results[key][self.index]
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        joint = self.joint
        if self.backend != "causal" or not isinstance(self.batch_size, int) or joint.out_of_memory:
            joint.alone.add(joint.names[self.index])
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        # Requests by their texts (what loglikelihood looks up before tokenizing); rolling windows
        # have none, so by their tokens.
        texts = [request for request, _, _ in requests]
        key = ((self.batch_size, self.batch_tokens, "texts", tuple(texts)) if None not in texts else
               (self.batch_size, self.batch_tokens, "tokens",
                tuple((tuple(context), tuple(continuation)) for _, context, continuation in requests)))
        if key not in joint.results:
            try:
                joint.results[key] = self._every_trial(requests)
            except torch.cuda.OutOfMemoryError:
                # K copies of a batch need K times its memory (the logits above all): score alone,
                # once the handler has let go of the pass's tensors.
                joint.out_of_memory = True
            if joint.out_of_memory:
                torch.cuda.empty_cache()
                joint.alone.add(joint.names[self.index])
                return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        joint.served.add(joint.names[self.index])
        return joint.results[key][self.index]

    def _every_trial(self, requests) -> list[list[tuple[float, bool]]]:
        """Each trial's ``(log-likelihood, greedy)`` per request, in the requests' order."""
        group_by = "contexts" if self.logits_cache else None
        orders = [Collator(requests, sort_fn=_sort_key, group_by=group_by, group_fn=_context_key)
                  for _ in self.joint.names]
        parts: list[list[Answers]] = [[] for _ in orders]
        with self._progress(requests) as bar:
            for chunks in zip(*(self._batches(order) for order in orders), strict=True):
                inputs, lengths = self._inputs(chunks[0])
                first = 0
                while first < len(orders):
                    trials = range(first, min(first + self.joint.stack, len(orders)))
                    found = self._stack_answers(inputs, lengths, trials, orders, chunks)
                    for k, answer in zip(trials, found, strict=False):  # fewer after a pass out of memory
                        parts[k].append(answer)
                    first += len(found)
                self._release()
                bar.update(sum(len(part.requests) for part in parts[0]) - bar.n)  # the first trial's answered so far
        return [order.get_original(self._read(found)) for order, found in zip(orders, parts, strict=True)]

    def _stack_answers(self, inputs: torch.Tensor, lengths: list[int], trials: range, orders, chunks) -> list:
        """The answers to one batch of the first of ``trials`` (indices into the pack's trials)
        that got them, from one forward of a copy of ``inputs`` per trial: all of them, or where
        the forward or a trial's log-softmax ran out of memory, those before it, and the stack is
        halved for the rest. A trial's answers are read (its Collator's cache consumed) only once
        its log-probabilities are there. Out of memory with a stack of one raises."""
        rows, found, logits = inputs.shape[0], [], None
        try:
            logits = self._stacked_call(inputs, trials)
        except torch.cuda.OutOfMemoryError:
            if len(trials) == 1:
                raise
        if logits is not None:
            for j, k in enumerate(trials):
                logprobs = None
                try:
                    logprobs = F.log_softmax(logits[j * rows:(j + 1) * rows], dim=-1, dtype=self.softmax_dtype)
                except torch.cuda.OutOfMemoryError:
                    if len(trials) == 1:
                        raise
                if logprobs is None:
                    break
                found.append(self._answers(orders[k], chunks[k], logprobs, lengths))
                del logprobs
            if len(found) == len(trials):
                return found
        # Out of the handlers: the pass's tensors are let go before the cache is emptied.
        del logits
        self.joint.stack = min(self.joint.stack, (len(trials) + 1) // 2)
        log.warning("pack scoring: a stacked pass of %d trials ran out of GPU memory; %d at a time from here",
                    len(trials), self.joint.stack)
        torch.cuda.empty_cache()
        return found

    def _stacked_call(self, inputs: torch.Tensor, trials: range) -> torch.Tensor:
        """One forward of one copy of ``inputs`` per trial of ``trials``, copy j on the adapter of
        the j-th of them."""
        rows = inputs.shape[0]
        routes = [Route(self.joint.names[k], j * rows, (j + 1) * rows) for j, k in enumerate(trials)]
        with self.joint.router.route(routes):
            logits = self._model_call(inputs.repeat(len(routes), 1))
        self.joint.forwards += 1
        return logits
