#!/usr/bin/env bash
# The GPU check of realm_hf: the `gpu` tests on CUDA, with every result written under one folder.
#
#   benchmarks/gpu_check.sh OUT_DIR            # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --smoke OUT_DIR    # on the CPU: the same steps as a dry run (tests on the CPU)
#
# Python packages the GPU machine lacks travel as wheels in `.whl/` (see `benchmarks/README.md`, "GPU check"): when
# that folder exists they are installed into a scratch site-packages first. Sized to end within 8 minutes on one H200,
# so that a second run fits in the same 15 minutes of device time.
set -euo pipefail

smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
    shift
fi
if [[ $# -ne 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
out="$1"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# What ran where: the machine, the GPU and the library versions.
"$python" - > "$out/environment.json" << 'EOF'
import json, platform, torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print(json.dumps(info, indent=2))
EOF
cat "$out/environment.json"

if [[ $smoke == 1 ]]; then
    export REALM_TEST_DEVICE=cpu
fi
# The `gpu` tests: every model class, open-QA with device queries and a CPU index, the pipeline, pre-training with its
# retriever and corpus embedding under autocast, each against the CPU.
status=0
timeout 300 "$python" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider --junitxml="$out/gpu_tests.xml" \
    2>&1 | tee "$out/gpu_tests.log" || status=$?
echo "gpu tests exit status: $status" | tee -a "$out/gpu_tests.log"
exit $status
