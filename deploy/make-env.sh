#!/bin/sh
# Writes the secrets docker compose needs into .env beside docker-compose.yml
# (git ignores it), each a random 64-hex-digit string: the API's bearer
# token and every service's Redis and PostgreSQL password. A variable .env
# already has is kept, so running it again changes nothing; delete a line to
# have it made anew. Run from the repository: `make env` or `sh deploy/make-env.sh`.
set -eu
env_file="$(dirname "$0")/../.env"
umask 077
touch "$env_file"
chmod 600 "$env_file"  # secrets: for its owner only, even if it was there before
made=""
for var in OCPP_API_TOKEN OCPP_ADMIN_REDIS_PASSWORD OCPP_GATEWAY_REDIS_PASSWORD \
  OCPP_ADAPTER_REDIS_PASSWORD OCPP_PROCESSOR_REDIS_PASSWORD OCPP_API_REDIS_PASSWORD \
  OCPP_ARCHIVER_REDIS_PASSWORD OCPP_POSTGRES_PASSWORD; do
  if ! grep -q "^$var=" "$env_file"; then
    # Hex only: every value goes into a URL (REDIS_URL, DATABASE_URL) as is.
    value=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    printf '%s=%s\n' "$var" "$value" >>"$env_file"
    made="$made $var"
  fi
done
if [ -n "$made" ]; then
  echo "make-env: wrote$made to .env"
else
  echo "make-env: .env has every variable already; nothing changed"
fi
