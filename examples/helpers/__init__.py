"""Helpers shared by the example scripts (not examples themselves).

- :mod:`helpers.data`: paths into ../shared/data, SNLI sentences and NLI triplets, STS-B scoring through
  ``st_contrast.evaluation.evaluate_model``;
- :mod:`helpers.tiny`: tiny randomly initialised models with real tokenizers, built offline;
- :mod:`helpers.scripts`: the YAML configs of the LLM2Vec / MLM scripts (``examples/configs/scripts/``) and
  their shared run steps.

The scripts import them as ``helpers.*`` (Python puts a script's own directory on ``sys.path``).
"""
