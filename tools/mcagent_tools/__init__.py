"""Host-side tools for mcagent boards (build, deploy, virtual board). Not the firmware package."""
