"""A small file to try completions on: `dlm-lsp complete examples/demo.py --line 9 --character 17`."""


def mean(values: list[float]) -> float:
    """Return the arithmetic mean of `values`."""
    if not values:
        raise ValueError("mean of an empty list")
    total = 0.0
    for v in values:
        total += 
    return total / len(values)


def variance(values: list[float]) -> float:
    m = mean(values)
    ...
