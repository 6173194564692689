"""HF transformers' side of `cargo xtask gpu-check`: forward+backward throughput of a
bert-base-sized, randomly initialized BertForSequenceClassification at batch 32 x 128,
fp32 and bf16 (torch.autocast), on the first CUDA device. Prints markdown rows.

Run (on the GPU machine): /opt/torch/.venv/bin/python gpu_check_hf.py
"""
import time

import torch
from transformers import BertConfig, BertForSequenceClassification


def rate(model, batch, labels, autocast):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=False)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    n = 20
    start = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return n * 32 / (time.perf_counter() - start)


def main():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig()).cuda().train()
    ids = torch.randint(1000, 30000, (32, 128), device="cuda")
    batch = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
    labels = torch.randint(0, 2, (32,), device="cuda")
    print(f"| HF transformers bert-base fwd+bwd Fp32, batch 32 x 128 | {rate(model, batch, labels, False):.1f} sequences/s | - |")
    print(f"| HF transformers bert-base fwd+bwd Bf16 (autocast), batch 32 x 128 | {rate(model, batch, labels, True):.1f} sequences/s | - |")


if __name__ == "__main__":
    main()
