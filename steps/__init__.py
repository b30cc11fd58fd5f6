"""Pipeline steps, one module each: train, serialize, package_pyfunc, evaluate.

``steps.main`` chains them; ``steps.common`` holds what they share;
``steps.dispatch_model`` is the pyfunc model file logged with the model.
"""
