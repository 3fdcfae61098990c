# Sourced by .ci/run, .ci/aarch64.sh and cross/build.sh: puts a Python virtual environment
# first on PATH, so that `python3 -m pip install` works on a distribution's own python3 too
# (Debian 12 / Ubuntu 24.04 refuse it there: PEP 668, "externally-managed-environment").
# Needs python3 with the venv module (apt: python3 python3-venv; .ci/run installs them).
#
# The venv lives OUTSIDE the checkout (SHAPECAST_VENV overrides): cargo-zigbuild runs zig as
# `python3 -m ziglang`, and zig reports its include folders relative to the working directory
# when they lie below it ("target/ci-venv/.../any-linux-any"); cargo-zigbuild hands those to
# bindgen, which runs in another directory, and the aarch64 camera build then failed with
# "'linux/videodev2.h' file not found" on a fresh machine.
ci_venv="${SHAPECAST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/shapecast/ci-venv}"
ci_venv="$(realpath -m "$ci_venv")"
# A venv whose creation failed half-way (python3-venv missing) leaves bin/python3 without pip:
# recreate it rather than trusting the interpreter's presence.
if ! "$ci_venv/bin/python3" -m pip --version >/dev/null 2>&1; then
  python3 -m venv --clear "$ci_venv"
fi
export PATH="$ci_venv/bin:$PATH"
