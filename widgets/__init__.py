"""Interactive widgets of the course (ipywidgets + plotly), each running the real ``dsv3_mini`` code.

``RouterLoadWidget`` (MoE routing and load), ``BiasBalancingWidget`` (loss-free balancing vs an auxiliary loss),
``KVCacheWidget`` (KV-cache bytes of MHA/GQA/MQA/MLA), ``FP8TileWidget`` (fine-grained FP8 quantisation and
accumulation), ``DeploymentWidget`` (memory, GPUs and decode speed of serving V3),
``PipelineScheduleWidget`` (1F1B, ZB1P and DualPipe timelines, bubbles and memory per rank),
``YaRNWidget`` (how plain, linear, NTK-aware and YaRN RoPE slow each frequency pair).
Each has ``.figure`` (a plotly FigureWidget), ``.message`` (why a setting is impossible),
``set_values(**controls)`` (several controls, one redraw) and ``static_figure()`` (a kernel-free plotly figure with
its own slider, for the book).
``setup_plotly()`` chooses how notebooks show figures.
"""

from .balancing import BiasBalancingWidget
from .deployment import DeploymentWidget
from .display import setup_plotly
from .fp8_tile import FP8TileWidget
from .kv_cache import KVCacheWidget
from .pipeline import PipelineScheduleWidget
from .router import RouterLoadWidget
from .yarn import YaRNWidget

__all__ = ["BiasBalancingWidget", "DeploymentWidget", "FP8TileWidget", "KVCacheWidget", "PipelineScheduleWidget",
           "RouterLoadWidget", "YaRNWidget", "setup_plotly"]
