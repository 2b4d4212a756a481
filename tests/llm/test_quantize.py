"""GPT.quantized_int8: int8 dynamic quantization of the linear layers for CPU inference."""

import torch
from _model_fixtures import one_torch_thread, tiny_model  # noqa: F401 (autouse)

from llm.generate import generate_ids


def test_int8_copy_stays_close_and_generates_with_the_cache():
    torch.manual_seed(0)
    model = tiny_model(300, init_std=0.05).eval()
    q = model.quantized_int8()
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert all(type(m) is not torch.nn.Linear for m in q.modules())  # the LM head too
    assert any(type(m) is torch.nn.Linear for m in model.modules())  # the original is untouched
    x = torch.randint(0, 300, (2, 40))
    with torch.inference_mode():
        ref, _ = model(x)
        got, _ = q(x)
    cos = torch.nn.functional.cosine_similarity(ref.flatten(1), got.flatten(1)).min()
    assert cos > 0.99, f"int8 logits drift from fp32 (cosine {cos:.4f})"
    assert not torch.equal(ref, got)  # it really computed in int8
    prompt = x[0, :12].tolist()
    out = generate_ids(q, [prompt], 10)[0]
    assert len(out) == 10 and out == generate_ids(q, [prompt], 10)[0]  # deterministic, cache works
