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
# The best model is refitted on the whole training set:
print(f"test accuracy: {search.score(X_test, y_test):.3f}")
