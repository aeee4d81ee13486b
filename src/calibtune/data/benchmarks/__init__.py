"""The built-in benchmarks, one module each; importing this package registers them all, in the order
:data:`~calibtune.data.DATASETS` lists them (and error messages name them)."""

from . import (  # noqa: F401  (imported to register)
    mmlu,
    arc,
    openbookqa,
    commonsenseqa,
    sciq,
    medmcqa,
    pubmedqa,
    logiqa,
    cosmosqa,
    piqa,
    boolq,
    winogrande,
    triviaqa,
    nq_open,
    entity_questions,
)
