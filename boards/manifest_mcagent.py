# The firmware every board freezes: included by boards/<name>/manifest.py after the port's own manifest,
# so the list of frozen packages exists once. Relative paths below are relative to this file.
package("mcagent", base_path="../firmware")
package("sensors", base_path="../firmware")
package("runtime", base_path="../firmware")
module("main.py", base_path="../firmware")
