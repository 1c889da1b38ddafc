"""The inference core that training and the service share, so that scores measured in training are what users get.

- ``card``: ``model.json``, the contract between export (writes it) and everything that loads a model.
- ``search``: greedy and beam search over any step model, as a closed loop (``search``) or steppable
  (``StepSearch``: sentences join and leave between decoder calls).
- ``onnx_model``: the step-model interface implemented over an exported encoder and decoder-step graph.
- ``translator``: sentences in, translations out: tokenization and end-of-sentence handling around the search.
- ``confidence``, ``language_id``, ``languages``: quality signals and calibrated confidence, language
  identification, language codes and names.

Nothing here knows about HTTP or about training; ``service/`` and ``training/`` both import from here.
"""
