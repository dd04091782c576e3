"""Version compatibility of the libraries st_contrast stands on, and every private hook it uses in them.

**Adapter support.** transformers' adapter integration (``model.add_adapter``, adapter-only ``save_pretrained``, and
the loading of a saved adapter by plain ``SentenceTransformer(dir)``) refuses to run when the installed peft is older
than the floor that transformers release declares (``MIN_PEFT_VERSION``). Every transformers release may raise that
floor before peft publishes a release that meets it, so a fresh install can resolve a pair that installs fine
and fails at the first LoRA call. :func:`adapter_support_problem` reads the floor of the installed
transformers, compares it with the installed peft, and says what to install instead.

**Upstream hooks.** st_contrast reaches into private or undocumented parts of sentence-transformers, transformers,
accelerate, mteb, peft, datasets and torch in a few places (ST's flattened text path, its pooling internals, the
trainer's checkpoint hooks...). Every such access goes through a small function in ``hooks.py``, or, for methods that
st_contrast overrides and for attributes read inside those libraries, is listed in :data:`HOOKS`
(``registry.py``). :func:`hook_problem` checks one entry against the installed release (``tests/test_compat.py`` checks
them all), so a release that removes or changes a hook fails with a message that names it. Adapter support lives in
``versions.py``.
"""

from __future__ import annotations

from st_contrast.compat.hooks import (
    SAMPLER_WRAPPER_ATTRIBUTES,
    accelerate_state_exists,
    attn_implementation,
    clear_prompt_lengths,
    dataset_fingerprint,
    embed_columns,
    flatten_inputs,
    flatten_position_offset,
    flattens_inputs,
    forget_peft_adapters,
    forward_params,
    has_peft_adapters,
    in_encode,
    is_persistent_buffer,
    load_checkpoint_weights,
    load_with_module_classes,
    model_position_offset,
    peft_configs,
    pool_flattened,
    pool_padded,
    prompt_length,
    register_attention_function,
    restore_padded_inputs,
    sequences_in,
    should_flatten_inputs,
    trainer_output_dir,
    training_progress_bar,
)
from st_contrast.compat.registry import (
    CHECKED_ON,
    HOOKS,
    Hook,
    hook_problem,
)
from st_contrast.compat.versions import (
    KNOWN_PEFT_FLOORS,
    CompatibilityError,
    adapter_support_problem,
    installed_version,
    require_adapter_support,
    transformers_min_peft_version,
)

__all__ = [
    "CHECKED_ON",
    "HOOKS",
    "KNOWN_PEFT_FLOORS",
    "SAMPLER_WRAPPER_ATTRIBUTES",
    "CompatibilityError",
    "Hook",
    "accelerate_state_exists",
    "adapter_support_problem",
    "attn_implementation",
    "clear_prompt_lengths",
    "dataset_fingerprint",
    "embed_columns",
    "flatten_inputs",
    "flatten_position_offset",
    "flattens_inputs",
    "forget_peft_adapters",
    "forward_params",
    "has_peft_adapters",
    "hook_problem",
    "in_encode",
    "installed_version",
    "is_persistent_buffer",
    "load_checkpoint_weights",
    "load_with_module_classes",
    "model_position_offset",
    "peft_configs",
    "pool_flattened",
    "pool_padded",
    "prompt_length",
    "register_attention_function",
    "require_adapter_support",
    "restore_padded_inputs",
    "sequences_in",
    "should_flatten_inputs",
    "trainer_output_dir",
    "training_progress_bar",
    "transformers_min_peft_version",
]
