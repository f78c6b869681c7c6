"""Request and response models, one module per resource. Table objects are never returned."""
