"""Build the offline tiny model `kvscale/tiny-llama` into a Hugging Face hub cache.

Run it with the vLLM venv's python (it needs torch, transformers and tokenizers, which the
project venv does not carry); scripts/build-engine-env.sh does. It takes seconds and needs no
network: a byte-level BPE tokenizer is trained on a few sentences and a Llama with random
weights (fixed seed) is saved as safetensors.

The result is laid out exactly like a model downloaded from the Hub:

    <hf-home>/hub/models--kvscale--tiny-llama/refs/main            holds <rev>
    <hf-home>/hub/models--kvscale--tiny-llama/snapshots/<rev>/...  the files

so that with HF_HOME=<hf-home> and HF_HUB_OFFLINE=1, `--model kvscale/tiny-llama` resolves the
same way a real model id does on a cluster with a populated cache. <rev> is a content hash of the
files, so an unchanged build gives the same revision.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import sys
import tempfile

import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

REPO_ID = "kvscale/tiny-llama"
SEED = 0
# 256 byte symbols + merges + 3 specials. Small on purpose: the model is random, only its shape
# (and so its KV-cache geometry) matters.
VOCAB_SIZE = 320
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
# head_dim = hidden / heads = 64: the CPU attention backend rejects small head sizes (16 failed).
HIDDEN_SIZE = 256
NUM_HEADS = 4
NUM_KV_HEADS = 2
NUM_LAYERS = 2
INTERMEDIATE_SIZE = 512
MAX_POSITIONS = 4096
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<s>' + message['role'] + ': ' + message['content'] + '</s>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant: ' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes and restarts containers that fail.",
    "An inference engine keeps the attention keys and values of every running request in a "
    "paged cache of fixed-size blocks.",
    "When the cache is full, requests wait in the queue or are preempted and recomputed.",
    "Scale out when the cache fills, scale in when it drains, and never drop a request.",
    "Hello, world! How are you today? 0123456789",
]


def build_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    # Prepend <s> like Llama tokenizers do, so prompts look like a real model's.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer: transformers.PreTrainedTokenizerFast) -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED)
    model = transformers.LlamaForCausalLM(config)
    return model.to(torch.float32).eval()


def content_revision(folder: pathlib.Path) -> str:
    """A 40-hex revision derived from the files, shaped like a Hub commit hash."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build(hf_home: pathlib.Path) -> pathlib.Path:
    repo_dir = hf_home / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    repo_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=repo_dir, prefix=".build-") as tmp:
        staging = pathlib.Path(tmp) / "model"
        tokenizer = build_tokenizer()
        model = build_model(tokenizer)
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
        rev = content_revision(staging)
        snapshot = repo_dir / "snapshots" / rev
        if not snapshot.is_dir():
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, snapshot)
    # refs/main is written last, atomically: a cache with refs/main is complete.
    refs = repo_dir / "refs"
    refs.mkdir(exist_ok=True)
    tmp_ref = refs / ".main.tmp"
    tmp_ref.write_text(rev)
    os.replace(tmp_ref, refs / "main")
    # Older snapshots of this builder are unreachable now; drop them so the cache stays small.
    for old in (repo_dir / "snapshots").iterdir():
        if old.name != rev:
            shutil.rmtree(old)
    readable_by_all(repo_dir)
    return snapshot


def readable_by_all(root: pathlib.Path) -> None:
    """Let any user read the model: the cache is mounted into engine containers that run as a
    non-root user (the engine image's 65532), and safetensors writes its file owner-only."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hf-home",
        type=pathlib.Path,
        required=True,
        help="the HF_HOME the engine will run with; the model goes under <hf-home>/hub",
    )
    args = parser.parse_args(argv)
    snapshot = build(args.hf_home)
    print(snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
