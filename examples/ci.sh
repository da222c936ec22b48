#!/usr/bin/env bash
# Third-party plugin checks, run inside the already-activated ssseg environment (called by .ci/run):
# install each example plugin (editable, without touching torch), run its tests, train it for two
# iterations through its entry point; then scaffold a plugin, install it, and run its own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
tmp=$(mktemp -d)
trap 'pip uninstall -q -y ssseg-ci-probe >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
install() { pip install -q --no-deps --no-build-isolation -e "$1"; }

install examples/adaptive_threshold
ssseg plugins | grep -E '^adaptive_threshold +ssseg-adaptive-threshold '
python -m pytest -q -p no:cacheprovider examples/adaptive_threshold/tests
ssseg train examples/adaptive_threshold/recipe.yaml --out "$tmp/adaptive" \
    -o optim.iters=2 -o eval.every=2 -o eval.max_images=4 -o run.log_every=1
grep -q '"adaptive_threshold/tau"' "$tmp/adaptive/metrics.jsonl"

install examples/feature_distillation
ssseg plugins | grep -E '^feature_distillation +ssseg-feature-distillation '
python -m pytest -q -p no:cacheprovider examples/feature_distillation/tests
ssseg train examples/feature_distillation/recipe.yaml --out "$tmp/distillation" \
    -o optim.iters=2 -o eval.every=2 -o eval.max_images=4 -o run.log_every=1
grep -q '"fd"' "$tmp/distillation/metrics.jsonl"

ssseg new-plugin ci-probe --dir "$tmp/ci-probe"
install "$tmp/ci-probe"
ssseg plugins | grep -E '^ci_probe +ssseg-ci-probe '
(cd "$tmp/ci-probe" && python -m pytest -q -p no:cacheprovider)
echo "examples/ci.sh: ok"
