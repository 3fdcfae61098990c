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
#
# SHAPECAST_VENV_NO_CREATE=1 (cross/build.sh): use the venv if it exists, never create one.
if [ -n "${SHAPECAST_VENV:-}" ]; then
  ci_venv="$(realpath -m "$SHAPECAST_VENV")"
  ci_venv_ours=0
else
  ci_venv="$(realpath -m "${XDG_CACHE_HOME:-${HOME:?HOME is not set: set SHAPECAST_VENV to a folder for the Python venv}/.cache}/shapecast/ci-venv")"
  ci_venv_ours=1
fi
if [ "${SHAPECAST_VENV_NO_CREATE:-0}" = 1 ]; then
  [ -x "$ci_venv/bin/python3" ] || return 0
elif ! "$ci_venv/bin/python3" -m pip --version >/dev/null 2>&1; then
  if [ "$ci_venv_ours" = 1 ] || [ ! -e "$ci_venv" ]; then
    # Ours (or nothing there yet): a venv whose creation failed half-way (python3-venv
    # missing) leaves bin/python3 without pip, so recreate it rather than trust it.
    python3 -m venv --clear "$ci_venv"
  else
    # The user's own venv (SHAPECAST_VENV), made without pip (`uv venv`, --without-pip):
    # never cleared, its packages stay; pip is added to it.
    "$ci_venv/bin/python3" -m ensurepip --upgrade >/dev/null ||
      { echo "python-env.sh: $ci_venv (SHAPECAST_VENV) has no pip and ensurepip failed; not touching it" >&2; return 1; }
  fi
fi
export PATH="$ci_venv/bin:$PATH"
