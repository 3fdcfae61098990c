#!/usr/bin/env bash
# Do two tract_bench binaries (e.g. the registry / session-6 tract-linalg and a patched one)
# write bit-identical outputs? Every output of every model, on a real picture.
# usage: bench/onnx/same_outputs.sh BIN_A BIN_B [MODEL.onnx ...]   (default: models/*.onnx)
# Image models ([1, 3, 64, 64] input) get models/samples/00_chair.png (a seeded random image
# when Pillow is missing), centre-cropped and
# normalised as the runtime does; other inputs take tract_bench's defaults (zeros for input 0,
# a fixed pattern for the rest). tract_bench --out writes the first output only, so a model
# with several outputs is also run once per further output, moved first (python3 + onnx).
# Exit status 1 if any output differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
A="$1"; B="$2"; shift 2
[ "$#" -gt 0 ] || set -- models/*.onnx
DIR=target/bench-onnx/same
mkdir -p "$DIR"
python3 - "$DIR/chair64.f32" <<'EOF'
import sys
import numpy as np
try:
    from PIL import Image
except ImportError:  # no Pillow: a seeded image in [-1, 1] stands in for the picture
    sys.stderr.write("same_outputs.sh: no PIL, using a seeded random image\n")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype("<f4")
    x.tofile(sys.argv[1])
    sys.exit(0)
im = Image.open("models/samples/00_chair.png").convert("RGB")
w, h = im.size
s = min(w, h)
im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((64, 64))
x = ((np.asarray(im, dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
x.astype("<f4").tofile(sys.argv[1])
EOF
variants() {  # the model, then one file per further output with that output first
  echo "$1"
  python3 - "$1" "$DIR" <<'EOF'
import os, sys
import onnx
path, out = sys.argv[1], sys.argv[2]
m = onnx.load(path)
outs = list(m.graph.output)
for i in range(1, len(outs)):
    del m.graph.output[:]
    m.graph.output.extend([outs[i]] + outs[:i] + outs[i + 1:])
    name = os.path.join(out, "%s.out%d.onnx" % (os.path.basename(path)[:-5], i))
    onnx.save(m, name)
    print(name)
EOF
}
fail=0
for m in "$@"; do
  input=""
  if python3 -c "import onnx,sys; m=onnx.load(sys.argv[1], load_external_data=False); d=[x.dim_value for x in m.graph.input[0].type.tensor_type.shape.dim]; sys.exit(0 if d==[1,3,64,64] else 1)" "$m"; then
    input="$DIR/chair64.f32"
  fi
  for v in $(variants "$m"); do
    "$A" "$v" $input --iters 2 --out "$DIR/a.f32" >/dev/null
    "$B" "$v" $input --iters 2 --out "$DIR/b.f32" >/dev/null
    n=$(( $(stat -c %s "$DIR/a.f32") / 4 ))
    if cmp -s "$DIR/a.f32" "$DIR/b.f32"; then
      echo "same      $v ($n values)"
    else
      echo "DIFFERENT $v ($n values): $(python3 -c "import numpy as n; a=n.fromfile('$DIR/a.f32','<f4'); b=n.fromfile('$DIR/b.f32','<f4'); print('max abs diff %.3e' % abs(a-b).max() if a.size==b.size else 'sizes differ')")"
      fail=1
    fi
  done
done
exit $fail
