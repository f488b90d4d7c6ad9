"""Look inside a fitted classifier: a layer-by-layer trace and plots.

- :func:`layer_trace` runs one image through the network and reports every
  layer's output shape and parameter count, and the softmax probabilities.
- :func:`plot_history` draws the loss and accuracy per epoch.
- :func:`plot_predictions` shows images with their predicted and true labels.

The plots need matplotlib (``pip install 'sklearn-cnn[plot]'``). For a confusion
matrix, use :meth:`sklearn.metrics.ConfusionMatrixDisplay.from_estimator`, which
works on the classifier and on a Pipeline ending in one.
"""

from ._layer_trace import LayerRow, LayerTrace, layer_trace
from ._plot import plot_history, plot_predictions

__all__ = ["LayerRow", "LayerTrace", "layer_trace", "plot_history", "plot_predictions"]
