#!/usr/bin/env bash
# HTTP benchmark of `:invoke` with wrk: throughput and latency of the sample extension
# (order-totals) for 1 tenant and for 50 tenants, and the noisy-neighbour figure: a quiet
# tenant's latency alone and while another tenant floods the API far beyond its rate.
#
#   crates/palisade-server/benches/http-invoke.sh            # release build (slow to build)
#   PROFILE=dev crates/palisade-server/benches/http-invoke.sh
#   DURATION=10 crates/palisade-server/benches/http-invoke.sh
#
# Needs wrk (Debian package `wrk`; installed here when missing) and the guests built.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PROFILE=${PROFILE:-release}
DURATION=${DURATION:-20}
PORT=${PORT:-18700}
TENANTS=${TENANTS:-50}
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
rustup target add wasm32-wasip2 >/dev/null 2>&1
(cd guests && cargo build --release --quiet)
cargo build --quiet --profile "$PROFILE" -p palisade-cli
dir=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN=$PWD/target/$dir/palisade
EXT=guests/examples/order-totals

DATA=$(mktemp -d)
SCRIPTS=$(mktemp -d)
"$BIN" serve --data-dir "$DATA" --listen "127.0.0.1:$PORT" --no-review \
  --max-workers $((TENANTS + 8)) --max-in-flight 512 >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA" "$SCRIPTS"' EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

export PALISADE_SERVER="http://127.0.0.1:$PORT"
export PALISADE_TOKEN
PALISADE_TOKEN=$(cat "$DATA/admin.token")

# A generous plan for the measured tenants, a small one for the noisy neighbour.
plan() { # tenant rate concurrency
  printf 'format = 1\nlayer = "tenant"\ntenant = "%s"\n\n[limits]\nrate = %s\nconcurrency = %s\n' "$1" "$2" "$3"
}
apply() { # tenant document
  curl -fsS -X PUT -H "Authorization: Bearer $PALISADE_TOKEN" -H 'Content-Type: application/json' \
    --data "$(jq -n --arg d "$2" '{document: $d, reason: "benchmark"}')" \
    "$PALISADE_SERVER/v1/tenants/$1/policy" >/dev/null
}
setup() { # tenant rate concurrency
  "$BIN" tenant create "$1" >/dev/null
  apply "$1" "$(plan "$1" "$2" "$3")"
  "$BIN" ext publish "$EXT" --tenant "$1" >/dev/null
  "$BIN" deploy "$1/order-totals@1.0.0" >/dev/null
}
command -v jq >/dev/null || apt-get install -y jq >/dev/null
# The shipped baseline caps every tenant at 1000/s and 64 in flight: lift it for the benchmark,
# so the measured tenants run into the machine's limits, not the policy's.
baseline=$(sed -e 's/^rate = .*/rate = 100_000/' -e 's/^concurrency = .*/concurrency = 1_024/' \
  crates/palisade-policy/baseline/baseline.toml)
curl -fsS -X PUT -H "Authorization: Bearer $PALISADE_TOKEN" -H 'Content-Type: application/json' \
  --data "$(jq -n --arg d "$baseline" '{document: $d, reason: "benchmark"}')" \
  "$PALISADE_SERVER/v1/policies/baseline" >/dev/null
echo "setting up $TENANTS tenants, quiet and noisy..." >&2
for i in $(seq "$TENANTS"); do setup "t$i" 100000 64; done
setup quiet 100000 64
setup noisy 200 8

cat >"$SCRIPTS/invoke.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PALISADE_TOKEN")
local f = io.open(os.getenv("BODY"), "rb"); wrk.body = f:read("*a"); f:close()
local tenants = tonumber(os.getenv("SPREAD") or "0")
local i = 0
if tenants > 0 then
  request = function()
    i = i + 1
    return wrk.format(nil, "/v1/tenants/t" .. (i % tenants + 1) .. "/extensions/order-totals:invoke")
  end
end
EOF
export BODY=$PWD/$EXT/order.json
url() { echo "$PALISADE_SERVER/v1/tenants/$1/extensions/order-totals:invoke"; }
warm() { SPREAD=${2:-0} wrk -t1 -c2 -d2s -s "$SCRIPTS/invoke.lua" "$1" >/dev/null; }
run() { # label connections url [spread]
  echo "== $1 ($2 connections, ${DURATION}s)"
  SPREAD=${4:-0} wrk -t2 -c"$2" -d"${DURATION}s" --latency -s "$SCRIPTS/invoke.lua" "$3" |
    grep -E 'Requests/sec|Latency  |50%|90%|99%|Non-2xx|requests in'
}

warm "$(url t1)"; warm "$(url t1)" "$TENANTS"; warm "$(url quiet)"
run "1 tenant" 16 "$(url t1)"
run "$TENANTS tenants, round robin" 16 "$(url t1)" "$TENANTS"
run "quiet tenant alone" 2 "$(url quiet)"
echo "== noisy tenant floods (64 connections; its plan: 200/s, 8 in flight) while the quiet tenant runs"
SPREAD=0 wrk -t1 -c64 -d"$((DURATION + 4))s" -s "$SCRIPTS/invoke.lua" "$(url noisy)" >"$SCRIPTS/flood.txt" &
FLOOD=$!
sleep 2
run "quiet tenant under the flood" 2 "$(url quiet)"
wait $FLOOD
echo "-- the flood:"; grep -E 'Requests/sec|Non-2xx|requests in' "$SCRIPTS/flood.txt"
curl -fsS -H "Authorization: Bearer $PALISADE_TOKEN" "$PALISADE_SERVER/metrics" | grep -E '^palisade_admissions_rejected_total|^palisade_workers_(started|live)' || true
