"""The sampler stage: checkpoints in, samples out (``orient sample``, the quickstart, reproduce).

* ``chain.py``: the reverse chain, a pure function of (score model, process, x_T, generator).
* ``model.py``: the score model and its process, rebuilt from a checkpoint.
* ``priors.py``: the reverse chain's starting states; the priors that need training data (the
  ``forward`` prior and each process's ``data_priors``) read the training store the checkpoint
  names, and say so; every other prior needs the checkpoint alone.
* ``run.py``: ``sample()``, the driver.
* ``output.py``: ``save_samples()``, the one writer of a samples folder.
"""

from .chain import reverse_chain
from .model import load_score_model
from .output import save_samples
from .priors import needs_training_store
from .run import SampleResult, sample

__all__ = [
    "SampleResult",
    "load_score_model",
    "needs_training_store",
    "reverse_chain",
    "sample",
    "save_samples",
]
