"""`mcagent` command line (deploy, flash, status, vboard) — placeholder until the deploy work lands."""


def main() -> int:
    print("mcagent: not implemented yet")
    return 1
