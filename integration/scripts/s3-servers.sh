#!/usr/bin/env bash
# Installs and starts the S3 servers the CI end-to-end suites run against, on loopback only:
#   moto   (pip install 'moto[server]'; honours conditional writes)
#   garage (cargo install garage; ignores conditional writes — tierlog must say so)
# Usage: s3-servers.sh start <workdir>   → writes <workdir>/moto.env and <workdir>/garage.env
#        s3-servers.sh stop <workdir>
# Each .env file holds the TIERLOG_TEST_S3_* variables for integration/src/lib.rs.
set -euo pipefail

cmd="${1:?start|stop}"
work="${2:?work directory}"
mkdir -p "$work"
BUCKET=tierlog-test
MOTO_PORT="${MOTO_PORT:-5055}"
GARAGE_S3_PORT="${GARAGE_S3_PORT:-3900}"
GARAGE_RPC_PORT="${GARAGE_RPC_PORT:-3901}"
GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"

wait_port() { # host port what
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$3 did not start listening on $1:$2" >&2
  return 1
}

start_moto() {
  if ! command -v moto_server >/dev/null 2>&1; then
    python3 -m pip install --quiet 'moto[server]'
  fi
  moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$work/moto.log" 2>&1 &
  echo $! >"$work/moto.pid"
  wait_port 127.0.0.1 "$MOTO_PORT" moto
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing python3 - <<PY
import boto3
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:$MOTO_PORT", region_name="us-east-1")
s3.create_bucket(Bucket="$BUCKET")
PY
  cat >"$work/moto.env" <<ENV
TIERLOG_TEST_S3_PROVIDER=moto
TIERLOG_TEST_S3_ENDPOINT=http://127.0.0.1:$MOTO_PORT
TIERLOG_TEST_S3_BUCKET=$BUCKET
TIERLOG_TEST_S3_ACCESS_KEY=testing
TIERLOG_TEST_S3_SECRET_KEY=testing
TIERLOG_TEST_S3_REGION=us-east-1
TIERLOG_TEST_S3_CONDITIONAL=true
TIERLOG_TEST_S3_AUTH=false
TIERLOG_TEST_S3_SERVER_LOG=$work/moto.log
ENV
}

start_garage() {
  if ! command -v garage >/dev/null 2>&1 || ! garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    echo "installing garage $GARAGE_VERSION (about 9 minutes on 2 cores)..."
    cargo install garage --locked --version "$GARAGE_VERSION" --quiet
  fi
  local secret
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  mkdir -p "$work/garage/meta" "$work/garage/data"
  cat >"$work/garage/garage.toml" <<TOML
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
  export GARAGE_CONFIG_FILE="$work/garage/garage.toml"
  garage server >"$work/garage.log" 2>&1 &
  echo $! >"$work/garage.pid"
  wait_port 127.0.0.1 "$GARAGE_S3_PORT" garage
  local node=""
  for _ in $(seq 1 50); do
    node=$(garage node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
    sleep 0.2
  done
  garage layout assign -z dc1 -c 1G "$node" >/dev/null
  garage layout apply --version 1 >/dev/null
  garage bucket create "$BUCKET" >/dev/null
  local keyinfo key_id key_secret
  keyinfo=$(garage key create tierlog-ci-key)
  key_id=$(echo "$keyinfo" | awk -F': *' '/Key ID/ {print $2; exit}')
  key_secret=$(echo "$keyinfo" | awk -F': *' '/Secret key/ {print $2; exit}')
  garage bucket allow --read --write --owner "$BUCKET" --key tierlog-ci-key >/dev/null
  cat >"$work/garage.env" <<ENV
TIERLOG_TEST_S3_PROVIDER=garage
TIERLOG_TEST_S3_ENDPOINT=http://127.0.0.1:$GARAGE_S3_PORT
TIERLOG_TEST_S3_BUCKET=$BUCKET
TIERLOG_TEST_S3_ACCESS_KEY=$key_id
TIERLOG_TEST_S3_SECRET_KEY=$key_secret
TIERLOG_TEST_S3_REGION=garage
TIERLOG_TEST_S3_CONDITIONAL=false
ENV
}

stop_all() {
  for name in moto garage; do
    if [ -f "$work/$name.pid" ]; then
      kill "$(cat "$work/$name.pid")" 2>/dev/null || true
      rm -f "$work/$name.pid"
    fi
  done
}

case "$cmd" in
  start)
    trap 'stop_all' ERR
    start_moto
    start_garage
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop <workdir>" >&2; exit 2 ;;
esac
