"""dsv3_mini: a small but real DeepSeek-V3 in pure PyTorch, for learning by building.

One concept per module, in the order the imports run (each imports only modules above it):

- the configuration and its arithmetic: ``config`` (ModelConfig, presets), ``params`` (analytic parameter counts),
  ``flops`` (a training step's model FLOPs), ``utils`` (seeds and threads);
- the parts: ``rope`` (RoPE; linear, NTK-aware and YaRN scaling), ``kv_cache`` (the cache and its size),
  ``attention`` (MLA naive/absorbed, MHA/GQA/MQA), ``moe`` (DeepSeekMoE router and experts), ``balancing`` (the bias
  rule, balance losses, MaxVio), ``fp8`` (FP8 quantization and linear layers) and ``fp8_gemm`` (tensor-core
  accumulation);
- the model: ``block`` (one transformer block), ``mtp`` (multi-token prediction), ``model`` (DeepSeekV3);
- using it: ``generate`` (cached and speculative decoding), ``interop`` (transformers conversion), ``data`` (the
  byte corpus), ``analysis`` (routing by domain), ``checkpoint`` (safetensors IO), ``interrupt`` (Ctrl-C between
  steps), ``cli`` (flags from a dataclass), ``devices`` (cpu, cuda, mps and their autocast), ``data_parallel``
  (DDP on torchrun's processes, the bias from every rank's loads) and ``train`` (the trainer).
- serving at scale: ``expert_parallel`` (routed experts sharded over gloo processes, all_to_all dispatch/combine),
  ``traffic`` (node-limited routing's bytes and nodes), ``placement`` (redundant experts) and ``deployment``
  (memory, GPUs, decode bound, the training bill).
- pipeline parallelism: ``pipeline_schedule`` (1F1B, ZB1P and DualPipe laid out, Table 2's bubbles), ``pipeline``
  (the model cut into stages, the single-process reference step), ``dualpipe_adapter`` (DeepSeek's ``dualpipe`` on
  CPU) and ``pipeline_run`` (the real schedules on gloo processes, timed per chunk).
- after pre-training: ``long_context`` (passkey retrieval past the training length, each RoPE method, the two-phase
  extension), ``addition_task`` (a verifiable task and its rule-based reward), ``sft`` (supervised fine-tuning, loss
  on the answer only), ``mtp_retune`` (the MTP draft after RL, and re-tuning it) and ``grpo`` (group-relative policy
  optimisation with KL to the frozen reference).
"""

from .config import ModelConfig, preset
from .model import DeepSeekV3, ModelOutput
from .params import count_params
from .utils import seed_everything

__all__ = ["DeepSeekV3", "ModelConfig", "ModelOutput", "count_params", "preset", "seed_everything"]
