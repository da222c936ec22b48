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

# check_example DIR PLUGIN DISTRIBUTION LOGGED_KEY: install, list, test, train 2 iterations
check_example() {
    install "examples/$1"
    ssseg plugins | grep -E "^$2 +$3 "
    python -m pytest -q -p no:cacheprovider "examples/$1/tests"
    ssseg train "examples/$1/recipe.yaml" --out "$tmp/$1" \
        -o optim.iters=2 -o eval.every=2 -o eval.max_images=4 -o run.log_every=1
    grep -q "\"$4\"" "$tmp/$1/metrics.jsonl"
}
check_example adaptive_threshold adaptive_threshold ssseg-adaptive-threshold adaptive_threshold/tau
check_example feature_distillation feature_distillation ssseg-feature-distillation fd

ssseg new-plugin ci-probe --dir "$tmp/ci-probe"
install "$tmp/ci-probe"
ssseg plugins | grep -E '^ci_probe +ssseg-ci-probe '
(cd "$tmp/ci-probe" && python -m pytest -q -p no:cacheprovider)
echo "examples/ci.sh: ok"
