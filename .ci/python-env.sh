# Sourced by .ci/run and .ci/aarch64.sh: puts a Python virtual environment in the target dir
# first on PATH, so that `python3 -m pip install` works on a distribution's own python3 too
# (Debian 12 / Ubuntu 24.04 refuse it there: PEP 668, "externally-managed-environment").
# Needs python3 with the venv module (apt: python3 python3-venv; .ci/run installs them).
ci_venv="${CARGO_TARGET_DIR:-$PWD/target}/ci-venv"
if [ ! -x "$ci_venv/bin/python3" ]; then
  python3 -m venv "$ci_venv"
fi
export PATH="$ci_venv/bin:$PATH"
