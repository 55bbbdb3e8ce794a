"""Model and trainer registry.

One explicit table maps the names accepted on the command line to the plugin's model
classes. :func:`get_model` looks here first and then falls back to RecBole's own models,
so ``--model=SASRec`` runs RecBole's baseline through exactly the same code path.
"""

import importlib

from recbole_attn.errors import ConfigError

# name on the command line -> "module:ClassName" (imported lazily: torch is only loaded when needed)
PLUGIN_MODELS = {
    "SASRecAttn": "recbole_attn.model.sasrec_attn:SASRecAttn",
    "PARec": "recbole_attn.model.parec:PARec",
    "FPARec": "recbole_attn.model.fparec:FPARec",
    "LinearAttnRec": "recbole_attn.model.linear_attn_rec:LinearAttnRec",
    "TokenMixRec": "recbole_attn.model.token_mix_rec:TokenMixRec",
    "AWRSR-SASRec": "recbole_attn.model.awrsr_sasrec:AWRSRSASRec",
    "STOSA": "recbole_attn.model.stosa:STOSA",
    "AWRSR-STOSA": "recbole_attn.model.awrsr_stosa:AWRSRSTOSA",
}

# other spellings that also work (class names); the canonical name is what configs and logs use
ALIASES = {
    "AWRSRSASRec": "AWRSR-SASRec",
    "AWRSRSTOSA": "AWRSR-STOSA",
}


def _available_plugin_models():
    """Names whose module exists in this installation (models land one issue at a time)."""
    names = []
    for name, target in PLUGIN_MODELS.items():
        module_name = target.split(":")[0]
        if importlib.util.find_spec(module_name) is not None:
            names.append(name)
    return names


def canonical_name(name):
    """The registry name for ``name`` (resolving aliases), or ``None`` for non-plugin models."""
    name = ALIASES.get(name, name)
    return name if name in _available_plugin_models() else None


def is_plugin_model(name):
    return canonical_name(name) is not None


def get_model(model_name):
    """Return the model class for ``model_name``: plugin first, then RecBole's models.

    Raises:
        ConfigError: with the list of plugin models, when neither knows the name.
    """
    name = canonical_name(model_name)
    if name is not None:
        module_name, class_name = PLUGIN_MODELS[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)

    import torch
    from recbole.utils import get_model as get_recbole_model

    # RecBole 1.2.1's sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True)
    # when it is imported, which the lookup below does: from then on every backward pass of the
    # process, of any model, checks each node's output for NaN and waits for it (one device sync
    # per node on a GPU). Keep the caller's setting instead.
    anomaly_detection = torch.is_anomaly_enabled()
    try:
        return get_recbole_model(model_name)
    # RecBole raises ValueError for unknown names, AttributeError for a wrong case, and
    # ImportError when probing its optional exlib models (lightgbm, xgboost) on the way
    except (ValueError, AttributeError, ImportError):
        raise ConfigError(
            f"model [{model_name}] is neither a recbole_attn model "
            f"({', '.join(_available_plugin_models())}) nor a RecBole model"
        ) from None
    finally:
        torch.autograd.set_detect_anomaly(anomaly_detection)


def get_trainer(model_type, model_name):
    """Return the trainer class: ``<Model>Trainer`` from :mod:`recbole_attn.trainer` if it
    exists, else RecBole's trainer for that model with the plugin's checkpoint fixes mixed in."""
    from recbole.utils import get_trainer as get_recbole_trainer

    from recbole_attn import trainer as plugin_trainers

    name = canonical_name(model_name) or model_name
    own = getattr(plugin_trainers, name.replace("-", "") + "Trainer", None)
    if own is not None:
        return own
    return plugin_trainers.with_checkpoint_fixes(get_recbole_trainer(model_type, model_name))
