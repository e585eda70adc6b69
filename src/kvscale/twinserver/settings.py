"""`kvscale twin`'s command line: vLLM's flags where they apply, and a few of the twin's own.
Pure: parses and validates; builds the engine twin's configuration and profile.

The engine-twin image runs the twin from the very args the operator renders for vLLM
(`kvscale_operator.reconciler.engine_args.render`), so every flag there is accepted and each is
either honoured or ignored on purpose (`IGNORED` says why). Flags vLLM does not have are errors,
as in vLLM. Differences from vLLM: `--host` defaults to 127.0.0.1 (vLLM: every interface), and the
twin has no weights, tokenizer or sampler (see `docs/engine-twin.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Sequence

from kvscale.twin import engine, profile, scheduler

GIB = 1024**3

GPU_ALIASES = {
    "h100": "h100-sxm",
    "h100-sxm": "h100-sxm",
    "a100": "a100-80gb",
    "a100-80gb": "a100-80gb",
    profile.CPU_CALIBRATED: profile.CPU_CALIBRATED,
}
MODEL_PROFILES = ("llama-3-8b", "llama-3-70b", "tiny-llama")
KV_CACHE_DTYPES = {"auto": None, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "bfloat16": 2,
                   "float16": 2}  # fmt: skip

# vLLM flags the twin accepts and ignores, with the reason: they change nothing it models.
IGNORED = {
    "--dtype": "the twin has no weights (KV-cache size follows --kv-cache-dtype)",
    "--seed": "the twin does not sample tokens",
    "--uvicorn-log-level": "the twin's server is not uvicorn",
}
IGNORED_SWITCHES = {
    "--enforce-eager": "no CUDA graphs to capture",
    "--trust-remote-code": "no model code is loaded",
    "--disable-log-requests": "the twin does not log requests",
    "--enable-log-requests": "the twin does not log requests",
    "--disable-log-stats": "the twin logs no periodic stats",
}


class SettingsError(ValueError):
    """A flag's value the twin cannot run with; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """One `kvscale twin` process: where its twins listen and how each engine is configured."""

    listen: tuple[tuple[str, int], ...]
    model: str
    served_model_name: str
    model_profile: str
    gpu: str
    engine: engine.EngineConfig
    profile: profile.Profile
    user_specified_block_size: bool
    kv_cache_dtype: str
    kv_cache_memory_bytes: int | None  # as vLLM's CPU build reports it; None on GPUs
    kv_offloading_size_gib: float | None
    kv_offloading_backend: str
    time_scale: float
    tick_s: float
    shutdown_timeout_s: float
    ignored: tuple[str, ...]


def _length(text: str) -> int:
    """vLLM's human-readable sizes: 1024, 1k (1000), 1K (1024), 2m, 2M."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count (e.g. 4096, 8k, 8K)")
    number, suffix = float(found.group(1)), found.group(2)
    scale = {"": 1, "k": 10**3, "K": 2**10, "m": 10**6, "M": 2**20, "g": 10**9, "G": 2**30}
    return round(number * scale[suffix])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    vllm = parser.add_argument_group("vLLM engine flags (same names and meaning as vLLM 0.32)")
    vllm.add_argument("--model", required=True, help="the model name clients ask for")
    vllm.add_argument(
        "--served-model-name", nargs="+", default=None, help="name(s) served; default: --model"
    )
    vllm.add_argument("--host", default="127.0.0.1", help="(vLLM's default: all interfaces)")
    vllm.add_argument("--port", type=int, default=8000)
    vllm.add_argument("--block-size", type=int, default=None, help="tokens per KV block")
    vllm.add_argument("--num-gpu-blocks-override", type=int, default=None)
    vllm.add_argument("--max-num-seqs", type=int, default=None)
    vllm.add_argument("--max-num-batched-tokens", type=_length, default=None)
    vllm.add_argument("--max-model-len", type=_length, default=None)
    vllm.add_argument(
        "--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True
    )
    vllm.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    vllm.add_argument("--kv-cache-dtype", choices=sorted(KV_CACHE_DTYPES), default="auto")
    vllm.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    vllm.add_argument(
        "--kv-offloading-size",
        type=float,
        default=None,
        help="GiB of CPU memory for KV offloading: the twin models it as swap",
    )
    vllm.add_argument("--kv-offloading-backend", choices=["native", "lmcache"], default="native")
    vllm.add_argument(
        "--shutdown-timeout",
        type=float,
        default=0.0,
        help="seconds to let in-flight requests finish after SIGTERM (0: abort them)",
    )
    for flag, why in IGNORED.items():
        vllm.add_argument(flag, default=None, help=f"accepted, ignored: {why}")
    for flag, why in IGNORED_SWITCHES.items():
        vllm.add_argument(flag, action="store_true", help=f"accepted, ignored: {why}")

    twin = parser.add_argument_group("engine twin flags")
    twin.add_argument(
        "--listen",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="serve one twin here (repeat for many twins in one process); replaces --host/--port",
    )
    twin.add_argument(
        "--gpu",
        default=None,
        help=f"hardware profile: {', '.join(GPU_ALIASES)} (default: h100, or "
        f"{profile.CPU_CALIBRATED} for tiny-llama)",
    )
    twin.add_argument(
        "--model-profile",
        choices=MODEL_PROFILES,
        default=None,
        help="model shape (default: recognised from --model)",
    )
    twin.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="twin seconds per wall-clock second (1 = real time, 10 = ten times faster)",
    )
    twin.add_argument(
        "--tick-ms",
        type=float,
        default=10.0,
        help="how often a busy twin hands out tokens, wall-clock ms (modelled times are exact)",
    )


def _model_profile(model: str, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    name = model.lower()
    if "tiny-llama" in name:
        return "tiny-llama"
    if re.search(r"llama-?3", name):
        if "70b" in name:
            return "llama-3-70b"
        if "8b" in name:
            return "llama-3-8b"
    raise SettingsError(
        f"--model {model!r}: no twin profile matches this name; pass --model-profile "
        f"({', '.join(MODEL_PROFILES)})"
    )


def _listen(args: argparse.Namespace) -> tuple[tuple[str, int], ...]:
    if not args.listen:
        return ((args.host, _port(args.port, "--port")),)
    found = []
    for item in args.listen:
        host, sep, port = str(item).rpartition(":")
        if not sep or not host:
            raise SettingsError(f"--listen {item!r}: must be HOST:PORT")
        try:
            number = int(port)
        except ValueError:
            raise SettingsError(f"--listen {item!r}: port {port!r} is not a number") from None
        found.append((host, _port(number, f"--listen {item!r}")))
    if len(set(found)) != len(found):
        raise SettingsError(f"--listen: an address is given twice ({args.listen})")
    return tuple(found)


def _port(port: int, flag: str) -> int:
    if not 0 < port < 65536:
        raise SettingsError(f"{flag}: port {port} must be in 1..65535")
    return port


def from_args(args: argparse.Namespace) -> Settings:
    """Validate the parsed flags and build the engine config; SettingsError names the flag."""
    model_profile = _model_profile(args.model, args.model_profile)
    gpu_flag = args.gpu or (profile.CPU_CALIBRATED if model_profile == "tiny-llama" else "h100")
    if gpu_flag not in GPU_ALIASES:
        raise SettingsError(f"--gpu {gpu_flag!r}: must be one of {', '.join(GPU_ALIASES)}")
    gpu = GPU_ALIASES[gpu_flag]
    try:
        prof = profile.get(gpu, model_profile, args.tensor_parallel_size)
    except ValueError as error:
        raise SettingsError(f"--gpu/--model-profile/--tensor-parallel-size: {error}") from None
    dtype_bytes = KV_CACHE_DTYPES[args.kv_cache_dtype]
    if dtype_bytes is not None:
        prof = dataclasses.replace(prof, kv_cache_dtype_bytes=dtype_bytes)
    cpu = gpu == profile.CPU_CALIBRATED

    # vLLM's CPU backend picks 128-token blocks by default, CUDA backends 16.
    block_size = args.block_size if args.block_size is not None else (128 if cpu else 16)
    swap_gib = args.kv_offloading_size
    if swap_gib is not None and not (math.isfinite(swap_gib) and swap_gib > 0):
        raise SettingsError(f"--kv-offloading-size {swap_gib}: must be a size in GiB > 0")
    for flag, value in (
        ("--time-scale", args.time_scale),
        ("--tick-ms", args.tick_ms),
    ):
        if not (math.isfinite(value) and value > 0):
            raise SettingsError(f"{flag} {value}: must be a number > 0")
    if not (math.isfinite(args.shutdown_timeout) and args.shutdown_timeout >= 0):
        raise SettingsError(f"--shutdown-timeout {args.shutdown_timeout}: must be >= 0")
    for flag, value in (
        ("--num-gpu-blocks-override", args.num_gpu_blocks_override),
        ("--max-num-seqs", args.max_num_seqs),
        ("--max-num-batched-tokens", args.max_num_batched_tokens),
        ("--max-model-len", args.max_model_len),
    ):
        if value is not None and value < 1:
            raise SettingsError(f"{flag} {value}: must be >= 1")
    try:
        config = engine.EngineConfig(
            block_size=block_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            num_gpu_blocks_override=args.num_gpu_blocks_override,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_num_seqs=args.max_num_seqs,
            max_model_len=args.max_model_len,
            enable_prefix_caching=args.enable_prefix_caching,
            preemption_mode=(
                scheduler.PreemptionMode.SWAP if swap_gib else scheduler.PreemptionMode.RECOMPUTE
            ),
            swap_space_bytes=round(swap_gib * GIB) if swap_gib else 0,
            record_token_times=True,  # the server hands out each token at its own time
        )
        config.resolve(prof)  # vLLM refuses at start what the twin would refuse later
    except ValueError as error:
        raise SettingsError(_flag_message(str(error))) from None

    names = args.served_model_name or [args.model]
    ignored = tuple(
        [f"{flag} ({why})" for flag, why in IGNORED.items() if getattr(args, _dest(flag))]
        + [f"{f} ({why})" for f, why in IGNORED_SWITCHES.items() if getattr(args, _dest(f))]
    )
    return Settings(
        listen=_listen(args),
        model=args.model,
        served_model_name=names[0],
        model_profile=model_profile,
        gpu=gpu,
        engine=config,
        profile=prof,
        user_specified_block_size=args.block_size is not None,
        kv_cache_dtype=args.kv_cache_dtype,
        kv_cache_memory_bytes=prof.gpu.memory_bytes if cpu else None,
        kv_offloading_size_gib=swap_gib,
        kv_offloading_backend=args.kv_offloading_backend,
        time_scale=args.time_scale,
        tick_s=args.tick_ms / 1000.0,
        shutdown_timeout_s=args.shutdown_timeout,
        ignored=ignored,
    )


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


# The engine config's field names, as the vLLM flags a user typed.
_FIELD_TO_FLAG = {
    "block_size": "--block-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "num_gpu_blocks": "--num-gpu-blocks-override (or --gpu-memory-utilization)",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "max_num_seqs": "--max-num-seqs",
    "max_model_len": "--max-model-len",
    "swap_space_bytes": "--kv-offloading-size",
}


def _flag_message(message: str) -> str:
    """Prefix an engine-config error with the flag behind the field it names."""
    field = message.split(" ", 1)[0]
    flag = _FIELD_TO_FLAG.get(field)
    return f"{flag}: {message}" if flag else message


def parse(argv: Sequence[str]) -> Settings:
    """Parse a `kvscale twin` argument list (tests and tools; the CLI uses `add_arguments`)."""
    parser = argparse.ArgumentParser(prog="kvscale twin")
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))
