#!/usr/bin/env bash
# deploy.sh: build and deploy the service to a host.
set -euo pipefail

readonly APP_NAME="ctxzip-demo"
DEPLOY_HOST="${DEPLOY_HOST:-staging.example.com}"

# Prints a message with a timestamp.
log() {
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# Builds the release binary.
function build {
  log "building ${APP_NAME}"
  cargo build --release || die "build failed"
}

upload() {
  local target="$1"
  if [[ -z "${target}" ]]; then
    die "no target given"
  fi
  scp "target/release/${APP_NAME}" "${DEPLOY_HOST}:/opt/${APP_NAME}/${target}"
}

function restart() {
  ssh "${DEPLOY_HOST}" "systemctl restart ${APP_NAME} && systemctl is-active ${APP_NAME}" \
    | while read -r line; do log "remote: ${line}"; done
}

trap 'log "interrupted"' INT

main() {
  build
  upload "current"
  restart
  log "deployed to ${DEPLOY_HOST}"
}

main "$@"
