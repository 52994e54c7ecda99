"""Command line of southgate (placeholder until the service lands)."""


def main() -> int:
    print("southgate: not implemented yet")
    return 1
