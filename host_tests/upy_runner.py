# Runs one firmware test function inside the MicroPython Unix port (see upyharness.py).
# argv: module name, test function name, path of a JSON file with keyword arguments.
import json
import sys


class Skip(Exception):
    pass


def main():
    module_name, test_name, args_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(args_path) as f:
        kwargs = json.load(f)
    module = __import__(module_name)
    try:
        getattr(module, test_name)(**kwargs)
    except Exception as e:  # noqa: BLE001 - report every failure with its MicroPython traceback
        if type(e).__name__ == "Skip":
            print("UPY-SKIP:", e.args[0] if e.args else "")
            return
        sys.print_exception(e)
        sys.exit(1)
    print("UPY-PASS")


main()
