"""The shipping stage: shipped model folders, their cards and the catalog of models/."""
