"""What the tests share: builders of models, stores and pipelines (``factories``), waits
for servers and processes (``helpers``), and the session-built champion store (``champion_store``)."""
