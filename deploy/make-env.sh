#!/bin/sh
# Writes what docker compose needs into .env beside docker-compose.yml (git
# ignores it): the API's bearer token and every service's Redis and
# PostgreSQL password, each a random 64-hex-digit string, and
# OCPP_CHARGERS_FILE, naming deploy/chargers, which it creates with one
# charger and a random password if it is missing. A variable .env already
# has with a value is kept, so running it again changes nothing; delete a
# line to have it made anew. Run from the repository: `make env` or
# `sh deploy/make-env.sh`.
#
# PostgreSQL takes its password when its volume is first created: on a
# volume made before, set the new one there too (README, "Docker").
set -eu
here="$(dirname "$0")"
env_file="$here/../.env"
umask 077
touch "$env_file"
chmod 600 "$env_file"  # secrets: for its owner only, even if it was there before

# A line with no value counts as missing: compose would put its dev-only
# default in its place without a word.
tmp="$env_file.tmp.$$"
grep -v '^OCPP_[A-Z_]*=$' "$env_file" >"$tmp" || true
mv "$tmp" "$env_file"
# What is appended must start on a line of its own.
if [ -s "$env_file" ] && [ -n "$(tail -c 1 "$env_file")" ]; then
  echo >>"$env_file"
fi

random() {  # hex only: every value goes into a URL (REDIS_URL, DATABASE_URL) as is
  od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

made=""
for var in OCPP_API_TOKEN OCPP_ADMIN_REDIS_PASSWORD OCPP_GATEWAY_REDIS_PASSWORD \
  OCPP_ADAPTER_REDIS_PASSWORD OCPP_PROCESSOR_REDIS_PASSWORD OCPP_API_REDIS_PASSWORD \
  OCPP_ARCHIVER_REDIS_PASSWORD OCPP_POSTGRES_PASSWORD; do
  if ! grep -q "^$var=" "$env_file"; then
    printf '%s=%s\n' "$var" "$(random)" >>"$env_file"
    made="$made $var"
  fi
done

chargers="$here/chargers"
if [ ! -e "$chargers" ]; then
  # Readable by the gateway's user in its container (another uid than
  # yours): keep the folder private instead.
  umask 022
  {
    echo "# The chargers the gateway lets in: <charge point id>:<password> a line"
    echo "# (format: deploy/chargers.example). Made by make-env.sh; edit freely."
    printf 'CP-0001:%s\n' "$(random)"
  } >"$chargers"
  umask 077
  made="$made deploy/chargers"
fi
if ! grep -q "^OCPP_CHARGERS_FILE=" "$env_file"; then
  echo "OCPP_CHARGERS_FILE=./deploy/chargers" >>"$env_file"
  made="$made OCPP_CHARGERS_FILE"
fi

if [ -n "$made" ]; then
  echo "make-env: wrote$made"
else
  echo "make-env: .env has every variable already; nothing changed"
fi
