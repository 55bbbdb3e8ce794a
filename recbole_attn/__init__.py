"""recbole_attn: attention designs for sequential recommendation as a RecBole plugin."""

__version__ = "0.1.0"

from recbole_attn.registry import PLUGIN_MODELS, get_model, get_trainer  # noqa: E402,F401


def run_recbole_attn(*args, **kwargs):
    """See :func:`recbole_attn.quick_start.run_recbole_attn`."""
    from recbole_attn.quick_start import run_recbole_attn as run

    return run(*args, **kwargs)
