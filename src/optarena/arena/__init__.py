"""The arena: tune and compare optimizers under an equal budget, store every run, report and judge the results.

It is built in layers, each a subpackage that imports only from the layers before it (and this
package imports none of them); ``tests/test_layers.py`` checks the order and that no imports form a
cycle:

``tasks``     what a problem is: data, model, loss, metric, registered by name
``spec``      what an experiment asks for: the Experiment, variants, the search space, experiment files
``run``       one training run: the runner, checks before training, ``optarena run``, several processes
``study``     many runs in one store: the typed results layer, the store, the protocol, the workers
``analysis``  numbers from stored results: statistics and views of an experiment
``render``    documents: blocks to Markdown and HTML, figures, the report
``evidence``  the seed papers' claims judged from the stores, and their page
``cli``       the ``optarena`` command: parses arguments and calls the layers
"""
