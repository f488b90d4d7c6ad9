"""Look inside a fitted classifier: a layer-by-layer trace and plots.

- :func:`layer_trace` runs one image through the network and reports every
  layer's output shape and parameter count, and the softmax probabilities.
- :func:`plot_history` draws the loss and the score per epoch, training and validation.
- :func:`plot_predictions` shows images with their predicted and true labels.
- :func:`class_activation_map` and :func:`plot_class_activation_maps` show
  where in each image the network found its class (Grad-CAM and variants).
- :func:`plot_top_losses` and :func:`most_confused` show what the model gets
  most wrong.
- :func:`find_learning_rate` runs the learning-rate range test on a copy of
  an estimator and suggests a rate.

The plots use matplotlib, installed with the package. For a confusion
matrix, use :meth:`sklearn.metrics.ConfusionMatrixDisplay.from_estimator`, which
works on the classifier and on a Pipeline ending in one.
"""

from .. import _lazy

__all__ = [
    "LayerRow",
    "LayerTrace",
    "LearningRateFinderResult",
    "class_activation_map",
    "find_learning_rate",
    "layer_trace",
    "most_confused",
    "plot_class_activation_maps",
    "plot_history",
    "plot_predictions",
    "plot_top_losses",
]

__getattr__, __dir__ = _lazy.attach(
    __name__,
    attributes={
        "_activation_maps": ["class_activation_map", "plot_class_activation_maps"],
        "_interpretation": ["most_confused", "plot_top_losses"],
        "_layer_trace": ["LayerRow", "LayerTrace", "layer_trace"],
        "_lr_finder": ["LearningRateFinderResult", "find_learning_rate"],
        "_plot": ["plot_history", "plot_predictions"],
    },
)
