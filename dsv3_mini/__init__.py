"""dsv3_mini: a small but real DeepSeek-V3 in pure PyTorch, for learning by building.

Modules, one concept each: ``config`` (ModelConfig, presets), ``params`` (analytic parameter counts), ``rope``
(RoPE + YaRN), ``attention`` (MLA naive/absorbed, MHA/GQA/MQA), ``kv_cache``, ``moe`` (DeepSeekMoE router and
experts), ``model`` (DeepSeekV3), ``generate`` (cached decoding), ``interop`` (transformers conversion).
"""

from .config import ModelConfig, preset
from .model import DeepSeekV3, ModelOutput
from .params import count_params
from .utils import seed_everything

__all__ = ["DeepSeekV3", "ModelConfig", "ModelOutput", "count_params", "preset", "seed_everything"]
