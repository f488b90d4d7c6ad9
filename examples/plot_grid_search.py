"""
========================================
Tuning the network with GridSearchCV
========================================

:class:`~sklearn_cnn.CNNImageClassifier` is a scikit-learn estimator, so its
parameters (and those of every Pipeline step) can be searched with
:class:`~sklearn.model_selection.GridSearchCV`. Here we search the number of
convolution filters and the number of epochs on small images.
"""

# %%
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.datasets import load_cats_dogs
from sklearn_cnn.preprocessing import ImageScaler

X, y = load_cats_dogs(image_size=24, n_samples=400, return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0
)

model = Pipeline(
    [
        ("scale", ImageScaler()),
        ("cnn", CNNImageClassifier(batch_size=16, random_state=0)),
    ]
)
param_grid = {
    "cnn__filters": [(8, 16), (16, 32, 64)],
    "cnn__epochs": [3, 6],
}
search = GridSearchCV(model, param_grid, cv=2)
_ = search.fit(X_train, y_train)

# %%
# The scores of every combination, and the best one:
for params, score in zip(
    search.cv_results_["params"], search.cv_results_["mean_test_score"]
):
    print(f"{score:.3f}  {params}")
print("best:", search.best_params_)

# %%
# The same scores drawn: one line per network, against the number of epochs.
import matplotlib.pyplot as plt
import numpy as np

results = search.cv_results_
figure, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for filters in param_grid["cnn__filters"]:
    rows = [i for i, p in enumerate(results["params"]) if p["cnn__filters"] == filters]
    epochs = [results["params"][i]["cnn__epochs"] for i in rows]
    mean = results["mean_test_score"][rows]
    spread = results["std_test_score"][rows]
    ax.errorbar(epochs, mean, yerr=spread, marker="o", capsize=4, label=f"{filters}")
ax.set_xticks(np.unique(param_grid["cnn__epochs"]))
ax.set_xlabel("epochs")
ax.set_ylabel("mean cross-validated accuracy")
ax.legend(title="filters")
_ = ax.set_title("Grid search scores")

# %%
# The best model is refitted on the whole training set:
print(f"test accuracy: {search.score(X_test, y_test):.3f}")
