"""``python -m linreg.benchmark``: this project's training speed and memory against plain PyTorch."""
