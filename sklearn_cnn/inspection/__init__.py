"""Look inside a fitted classifier: a layer-by-layer trace and plots.

- :func:`layer_trace` runs one image through the network and reports every
  layer's output shape and parameter count, and the softmax probabilities.
- :func:`plot_history` draws the loss and accuracy per epoch.
- :func:`plot_predictions` shows images with their predicted and true labels.

The plots use matplotlib, installed with the package. For a confusion
matrix, use :meth:`sklearn.metrics.ConfusionMatrixDisplay.from_estimator`, which
works on the classifier and on a Pipeline ending in one.
"""

from .. import _lazy

__all__ = ["LayerRow", "LayerTrace", "layer_trace", "plot_history", "plot_predictions"]

__getattr__, __dir__ = _lazy.attach(
    __name__,
    attributes={
        "_layer_trace": ["LayerRow", "LayerTrace", "layer_trace"],
        "_plot": ["plot_history", "plot_predictions"],
    },
)
