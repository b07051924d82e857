#!/usr/bin/env bash
# The cost command (not part of the tests): builds the Worker, then runs
# bench/cost.mjs, which measures each transport on bare workerd and prices
# a month (bench/results/cost-<stamp>.{md,svg,json}).
#
#   npm run cost               # about 15 minutes
#   npm run cost -- --quick    # 10 s windows, to try it out
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
node bench/cost.mjs "$@"
