"""The pieces of the ``sklearn-cnn`` command (see :mod:`sklearn_cnn.cli`).

One module per sub-command (``train``, ``predict``, ``evaluate``), each with an
``add_parser`` and a ``run``; the helpers they share live beside them. Only the
standard library is imported at the top of these modules: torch, scikit-learn
and matplotlib are imported when a sub-command runs, so that ``--help`` answers
at once.
"""
