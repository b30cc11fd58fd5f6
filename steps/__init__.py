"""The four pipeline steps, one module each: ``train``, ``serialize``,
``package_pyfunc``, ``evaluate``. Each is an MLproject entry point; the driver
(``pipeline.main``) chains them."""
