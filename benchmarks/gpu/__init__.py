"""GPU figures and the device scripts that produce them (run on the GPU machine: check.sh)."""
