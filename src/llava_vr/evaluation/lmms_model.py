# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""LLaVA-VR as an lmms-eval (0.7) model, out of tree: `lmms-eval --model llava_vr` (Transformers back end) or
`--model llava_vr_vllm` (vLLM back end, the project's out-of-tree vLLM model), registered by the `lmms_eval.models`
entry point (`manifest.py`).

`--model_args` keys (both back ends): `pretrained` (checkpoint folder or Hub id), `projector_pooled_grid_size=g` or
`tokens_per_tile=g*g` (the token budget per tile, see `budget.py`; default: the checkpoint's), `image_placement`
(`first` / `last`, for prompts without `<image>` placeholders, see `prompts.py`), `dtype` (default `float32`).
Transformers only: `device`. vLLM only: `max_model_len`, `max_num_seqs`, `enforce_eager`, `max_images` (per prompt),
`gpu_memory_utilization`, `tensor_parallel_size`.

Request types: `generate_until` (batched: left padding, `max_new_tokens` / `temperature` / `top_p` / `num_beams` /
`until` from the task's `generation_kwargs`), `loglikelihood` (the continuation's summed log-probability and whether
greedy decoding gives it: multiple-choice tasks) and `generate_until_multi_round`; images (any number per sample) and
text-only samples.
"""

from __future__ import annotations

import json

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from .budget import budget_grid
from .prompts import chat_prompt, cut_at_stops, flat_visuals

DEFAULT_MAX_NEW_TOKENS = 128


def _flag(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


class LlavaVRLmmsBase(lmms):
    """What both back ends share: request unpacking, prompts, batching by generation settings, multi-round loops."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        projector_pooled_grid_size=None,
        tokens_per_tile=None,
        image_placement: str = "first",
        batch_size=1,
        dtype: str = "float32",
        max_batch_size=None,  # lmms-eval passes it; batches are `batch_size`
        **unknown,
    ) -> None:
        super().__init__()
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown --model_args {sorted(unknown)} (see llava_vr.evaluation.lmms_model's "
                "docstring for the keys of each back end)"
            )
        self.pretrained = pretrained
        self.grid = budget_grid(tokens_per_tile, projector_pooled_grid_size)
        self.image_placement = image_placement
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1
        self.dtype = dtype

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- request helpers ---------------------------------------------------------------------------------------
    def _images(self, doc_to_visual, doc_id, task, split) -> tuple[list, str]:
        """The sample's images and its name for messages (`task/split/doc_id`)."""
        name = f"sample {doc_id} of {task} ({split})"
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc) if doc_to_visual is not None else None
        return flat_visuals(visuals, name), name

    def _prompt(self, context: str, images: list, name: str) -> str:
        return chat_prompt(self.processor, context, len(images), self.image_placement, name)

    # ---- lmms-eval's request types -----------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy (or sampled) answers, batched by identical `generation_kwargs`, in request order."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        progress = tqdm(total=len(requests), desc="LLaVA-VR generating", disable=self.rank != 0)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            until = gen_kwargs.pop("until", None)
            for start in range(0, len(indices), self.batch_size_per_gpu if self.supports_batching else len(indices)):
                chunk = indices[start : start + (self.batch_size_per_gpu if self.supports_batching else len(indices))]
                prompts, images = [], []
                for index in chunk:
                    context, _, doc_to_visual, doc_id, task, split = requests[index].args
                    sample_images, name = self._images(doc_to_visual, doc_id, task, split)
                    prompts.append(self._prompt(context, sample_images, name))
                    images.append(sample_images)
                for index, text in zip(chunk, self._generate(prompts, images, gen_kwargs, until), strict=True):
                    results[index] = cut_at_stops(text, until)
                progress.update(len(chunk))
        progress.close()
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """`(log p(continuation | context, images), continuation is the greedy continuation)` per request."""
        results = []
        for request in tqdm(requests, desc="LLaVA-VR log-likelihoods", disable=self.rank != 0):
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            images, name = self._images(doc_to_visual, doc_id, task, split)
            continuation = doc_to_target
            if not isinstance(continuation, str):
                continuation = doc_to_target(self.task_dict[task][split][doc_id])
            results.append(self._continuation_logprob(self._prompt(context, images, name), images, continuation))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[tuple[str, ...]]:
        """Each round's answer. From the second round on, the task's `doc_to_text(doc, previous_output=...,
        round_idx=..., previous_round_info=...)` gives `(visuals, context, stop, round outputs, info)` (lmms-eval's
        multi-round protocol)."""
        results = []
        for request in tqdm(requests, desc="LLaVA-VR multi-round", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs)
            until = gen_kwargs.pop("until", None)
            doc = self.task_dict[task][split][doc_id]
            images, name = self._images(doc_to_visual, doc_id, task, split)
            outputs, info, round_index = [], None, 0
            while True:
                if round_index:
                    visuals, context, stop, outputs, info = doc_to_text(
                        doc, previous_output=list(outputs), round_idx=round_index, previous_round_info=info
                    )
                    outputs = list(outputs)
                    if stop:
                        break
                    images = flat_visuals(visuals, name)
                text = self._generate([self._prompt(context, images, name)], [images], gen_kwargs, until)[0]
                outputs.append(cut_at_stops(text, until))
                round_index += 1
            results.append(tuple(outputs))
        return results

    # ---- back end --------------------------------------------------------------------------------------------
    supports_batching = True

    def _generate(self, prompts: list[str], images: list[list], gen_kwargs: dict, until) -> list[str]:
        raise NotImplementedError

    def _continuation_logprob(self, prompt: str, images: list, continuation: str) -> tuple[float, bool]:
        raise NotImplementedError


class LlavaVRLmms(LlavaVRLmmsBase):
    """Transformers back end: `LlavaVRForConditionalGeneration.generate`, `batch_size` prompts at a time."""

    def __init__(self, pretrained: str, device: str = "cpu", **kwargs) -> None:
        super().__init__(pretrained, **kwargs)
        from .budget import load_model_and_processor

        self.model, self.processor = load_model_and_processor(pretrained, self.grid, self.dtype, device or "cpu")
        self.processor.tokenizer.padding_side = "left"
        self.device = self.model.device

    def _inputs(self, prompts: list[str], images: list[list]):
        flat = [image for sample in images for image in sample]
        inputs = self.processor(text=prompts, images=flat or None, return_tensors="pt", padding=True)
        return inputs.to(self.device)

    def _generate(self, prompts, images, gen_kwargs, until) -> list[str]:
        import torch

        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        do_sample = _flag(gen_kwargs.get("do_sample", False)) or temperature > 0
        options = dict(
            max_new_tokens=int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            do_sample=do_sample,
            num_beams=int(gen_kwargs.get("num_beams", 1)),
        )
        if do_sample:
            options.update(temperature=temperature or 1.0, top_p=float(gen_kwargs.get("top_p") or 1.0))
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            generated = self.model.generate(**inputs, **options)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def _continuation_logprob(self, prompt, images, continuation) -> tuple[float, bool]:
        import torch

        context_ids = self.processor(text=[prompt], images=images or None, return_tensors="pt")["input_ids"][0]
        inputs = self._inputs([prompt + continuation], [images])
        ids = inputs["input_ids"][0]
        start = len(context_ids)
        if not torch.equal(ids[:start], context_ids.to(ids.device)):  # the continuation merged into the prompt's end
            start = int((ids[: len(context_ids)] == context_ids.to(ids.device)).long().cumprod(0).sum())
        with torch.inference_mode():
            logits = self.model(**inputs).logits[0, start - 1 : -1].float()
        targets = ids[start:]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]
        return float(logprobs.sum()), bool((logits.argmax(-1) == targets).all())


class LlavaVRVLLMLmms(LlavaVRLmmsBase):
    """vLLM back end: the project's out-of-tree vLLM model (its plugin registers it), every request of a call handed
    to the engine at once (continuous batching). The budget reaches vLLM as `hf_overrides` (the model) and
    `mm_processor_kwargs` (the processor's `num_image_tokens`)."""

    supports_batching = False  # vLLM schedules the whole list itself

    def __init__(
        self,
        pretrained: str,
        max_model_len=None,
        max_num_seqs=16,
        enforce_eager=True,
        max_images=4,
        gpu_memory_utilization=None,
        tensor_parallel_size=1,
        device=None,
        **kwargs,
    ) -> None:
        super().__init__(pretrained, **kwargs)
        from vllm import LLM

        from llava_vr import LlavaVRProcessor

        self.processor = LlavaVRProcessor.from_pretrained(pretrained)  # chat template, tokenizer
        engine = dict(
            model=pretrained,
            trust_remote_code=True,
            dtype=self.dtype,
            max_num_seqs=int(max_num_seqs),
            enforce_eager=_flag(enforce_eager),
            tensor_parallel_size=int(tensor_parallel_size),
            limit_mm_per_prompt={"image": int(max_images)},
        )
        if max_model_len is not None:
            engine["max_model_len"] = int(max_model_len)
        if gpu_memory_utilization is not None:
            engine["gpu_memory_utilization"] = float(gpu_memory_utilization)
        if self.grid is not None:
            engine["hf_overrides"] = {"projector_pooled_grid_size": self.grid}
            engine["mm_processor_kwargs"] = {"num_image_tokens": self.grid * self.grid}
        self.llm = LLM(**engine)

    @staticmethod
    def _request(prompt: str, images: list) -> dict:
        return {"prompt": prompt, "multi_modal_data": {"image": images}} if images else {"prompt": prompt}

    def _generate(self, prompts, images, gen_kwargs, until) -> list[str]:
        from vllm import SamplingParams

        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        if not (_flag(gen_kwargs.get("do_sample", False)) or temperature > 0):
            temperature = 0.0
        params = SamplingParams(
            temperature=temperature,
            top_p=float(gen_kwargs.get("top_p") or 1.0),
            max_tokens=int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            stop=[until] if isinstance(until, str) else list(until or []) or None,
        )
        requests = [self._request(p, i) for p, i in zip(prompts, images, strict=True)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

    def _continuation_logprob(self, prompt, images, continuation) -> tuple[float, bool]:
        from vllm import SamplingParams

        tokenizer = self.processor.tokenizer
        context_length = len(tokenizer(prompt)["input_ids"])
        params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        output = self.llm.generate([self._request(prompt + continuation, images)], params, use_tqdm=False)[0]
        ids, logprobs = output.prompt_token_ids, output.prompt_logprobs
        # the prompt's image placeholder is expanded by vLLM: count the continuation from the end
        length = len(tokenizer(prompt + continuation)["input_ids"]) - context_length
        total, greedy = 0.0, True
        for position in range(len(ids) - length, len(ids)):
            entry = logprobs[position][ids[position]]
            total += entry.logprob
            greedy = greedy and entry.rank == 1
        return total, greedy


__all__ = ["LlavaVRLmms", "LlavaVRLmmsBase", "LlavaVRVLLMLmms"]
