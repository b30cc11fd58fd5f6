"""The dynamic-dispatch pyfunc model file (``dispatch_model.py``), logged with each
model as code. It imports nothing from the project, so a model loads without it."""
