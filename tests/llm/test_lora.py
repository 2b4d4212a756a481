"""llm.lora: only adapters train, merging is exact, adapters save and load on their own."""

import pytest
import torch
from _model_fixtures import one_torch_thread, tiny_model  # noqa: F401 (autouse)

from llm.checkpoint import load_pretrained, save_pretrained
from llm.generate import generate_ids
from llm.lora import (
    LoRAConfig,
    apply_lora,
    has_lora,
    load_lora,
    lora_parameters,
    merge_lora,
    save_lora,
)


def train_a_little(model, steps=5):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(1)
    idx = torch.randint(0, 300, (4, 16))
    for _ in range(steps):
        _, loss = model(idx, targets=idx)
        loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_only_adapters_train_and_merge_is_exact(arch):
    model = tiny_model(300, arch=arch).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoRAConfig(rank=4, alpha=8, dropout=0.1))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}
    n_blocks = model.config.n_layer
    per_block = 7 if arch == "llama" else 6
    assert len(lora_parameters(model)) == 2 * per_block * n_blocks
    idx = torch.randint(0, 300, (2, 10))
    model.eval()
    assert torch.allclose(model(idx)[0], tiny_model(300, arch=arch)(idx)[0], atol=1e-6)  # B = 0 at start
    model.train()
    train_a_little(model)
    model.eval()
    for name, value in model.state_dict().items():  # base weights untouched
        if "lora_" not in name:
            assert torch.equal(value, before[name.replace(".base.", ".")])
    unmerged = model(idx)[0]
    greedy = generate_ids(model, [[1, 2, 3]], 8)  # generation runs the unfused LoRA projections
    assert not torch.allclose(unmerged, tiny_model(300, arch=arch)(idx)[0], atol=1e-4)  # adapters learned
    merge_lora(model)
    assert not has_lora(model)
    assert (merged := model(idx)[0]).shape == unmerged.shape
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert generate_ids(model, [[1, 2, 3]], 8) == greedy  # and the merged model its fused ones


def test_adapters_save_and_load_on_their_own(tmp_path):
    model = apply_lora(tiny_model(300).train(), rank=2, targets="q_proj,v_proj")
    train_a_little(model)
    model.eval()
    idx = torch.randint(0, 300, (2, 10))
    expected = model(idx)[0]
    out = save_lora(model, tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (out / "adapter_model.safetensors").stat().st_size < 20_000  # adapters only, not the base
    fresh = load_lora(tiny_model(300), out).eval()
    assert torch.allclose(fresh(idx)[0], expected, atol=1e-6)
    # save_pretrained merges (on a copy) so a LoRA-trained model becomes a plain checkpoint
    save_pretrained(model, None, tmp_path / "merged")
    assert has_lora(model)
    merged, _ = load_pretrained(tmp_path / "merged")
    assert torch.allclose(merged(idx)[0], expected, atol=1e-5)


def test_adapter_errors(tmp_path):
    with pytest.raises(ValueError, match="LoRAConfig.rank=0 must be a positive integer"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="no linear layer named qkv in this model"):
        apply_lora(tiny_model(300), targets=["qkv"])
    with pytest.raises(FileNotFoundError, match="not a LoRA adapter folder"):
        load_lora(tiny_model(300), tmp_path)
    out = save_lora(apply_lora(tiny_model(300), rank=2), tmp_path / "a")
    with pytest.raises(ValueError, match=r"different base model \(n_layer differ\)"):
        load_lora(tiny_model(300, n_layer=3), out)
