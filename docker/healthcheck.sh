#!/usr/bin/env bash
# Container healthcheck: succeeds when GET /health on 127.0.0.1:$1 answers 200. Bash's
# /dev/tcp keeps curl out of the runtime image.
set -euo pipefail
port=${1:?usage: healthcheck PORT}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 5 _ status _ <&3
[[ $status == 200 ]]
