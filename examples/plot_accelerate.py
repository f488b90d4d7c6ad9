"""
===============================================
Training one model on several GPUs (Accelerate)
===============================================

``CNNImageClassifier(accelerator=Accelerator())`` trains data-parallel through
Hugging Face Accelerate: launched once per GPU (``accelerate launch --multi_gpu
--num_processes 4 this_script.py``), every process trains on its share of each
epoch and the gradients are averaged across processes.

Run as a plain script, as here, it trains in a single process. We force the CPU
with ``Accelerator(cpu=True)`` so that this example runs anywhere; on a machine
with GPUs, use ``Accelerator()``.
"""

# %%
# The data: the embedded cat and dog silhouettes, made small to be quick.
import numpy as np
from accelerate import Accelerator
from sklearn.model_selection import train_test_split

from sklearn_cnn import CNNImageClassifier
from sklearn_cnn.datasets import load_cats_dogs

X, y = load_cats_dogs(image_size=16, n_samples=600, return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=100, stratify=y, random_state=0
)
print(X_train.shape, X_train.dtype)

# %%
# Training through the accelerator. In a multi-GPU launch, ``batch_size`` is
# per process and ``random_state`` must be an int, so that every process holds
# out the same validation images for early stopping.
accelerator = Accelerator(cpu=True)
params = dict(filters=(8, 16), epochs=10, batch_size=32, lr=3e-3, random_state=0)
clf = CNNImageClassifier(accelerator=accelerator, **params, verbose=1)
clf.fit(X_train, y_train)
print(f"{accelerator.num_processes} process(es) on {clf.device_}")
print(f"Test accuracy: {clf.score(X_test, y_test):.2f}")

# %%
# In one process the accelerated path trains exactly as the plain classifier
# does: same seeds, same batches, same steps.
plain = CNNImageClassifier(device="cpu", **params).fit(X_train, y_train)
print("Same training loss per epoch:", np.allclose(clf.loss_curve_, plain.loss_curve_))
print(
    "Same predictions:",
    np.array_equal(clf.predict(X_test), plain.predict(X_test)),
)

# %%
# The training curves of the accelerated fit, from its ``history_``:
from sklearn_cnn.inspection import plot_history

axes = plot_history(clf)

# %%
# Only the main process should write files in a multi-GPU run.
if accelerator.is_main_process:
    print("The main process saves the model, for example with joblib.dump.")
