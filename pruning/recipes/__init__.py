"""Built-in recipes (YAML), loaded by name with ``pruning.recipe.load_recipe``."""
