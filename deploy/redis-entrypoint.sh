#!/bin/sh
# redis-server under the users of redis-users.acl (the file beside this one),
# each placeholder #REPLACE-WITH-SHA256-OF-THE-<NAME>-PASSWORD replaced with
# the SHA-256 of the environment variable <NAME>_REDIS_PASSWORD, dashes made
# underscores (OCPP-ADAPTER: OCPP_ADAPTER_REDIS_PASSWORD). Arguments go on to
# redis-server after --aclfile:
#
#   sh deploy/redis-entrypoint.sh --appendonly yes
#
# The rendered file ($TMPDIR or /tmp, ocpp-redis-users.acl, mode 600) holds
# hashes, not passwords: only hex goes into it, so no password character can
# break the ACL syntax (quotes and backslashes are special there), and
# nothing that reads it later (a backup of the container, ACL SAVE) learns a
# password. A password that is missing, empty or has whitespace in it is
# refused before Redis starts, naming the variable and never the value.
set -eu

template="$(dirname "$0")/redis-users.acl"
rendered="${TMPDIR:-/tmp}/ocpp-redis-users.acl"

# Files Redis writes (AOF, RDB) are for its own user only, as the official
# image's entrypoint has them.
umask 077
tmp=$(mktemp "$rendered.XXXXXX")

# awk prints the names of the variables it used; the file goes to $out.
# Each hash is computed by a shell that expands the variable itself, so a
# password is never in a command line (ps) and never quoted by awk.
vars=$(out="$tmp" awk '
function fail(var, why) {
    if (!(var in failed))
        printf "redis-entrypoint: %s (the password of Redis user %s) %s\n",
            var, user, why > "/dev/stderr"
    failed[var] = 1
    bad = 1
    return "#"
}

function sha256(var,    cmd, line, hex) {
    if (var in hashes) return hashes[var]
    if (ENVIRON[var] == "") return fail(var, "is not set or is empty")
    if (ENVIRON[var] ~ /[ \t\n\r\f\v]/) return fail(var, "contains whitespace")
    cmd = "printf %s \"$" var "\" | sha256sum"
    cmd | getline line
    close(cmd)
    hex = substr(line, 1, 64)
    if (hex !~ /^[0-9a-f]+$/ || length(hex) != 64) return fail(var, "could not be hashed")
    print var
    hashes[var] = "#" hex
    return hashes[var]
}

BEGIN { prefix = "#REPLACE-WITH-SHA256-OF-THE-"; suffix = "-PASSWORD" }

{
    rest = $0
    done = ""
    while (match(rest, /#REPLACE-WITH-SHA256-OF-THE-[A-Z0-9-]+-PASSWORD/)) {
        name = substr(rest, RSTART + length(prefix),
                      RLENGTH - length(prefix) - length(suffix))
        user = tolower(name)
        var = name
        gsub(/-/, "_", var)
        done = done substr(rest, 1, RSTART - 1) sha256(var "_REDIS_PASSWORD")
        rest = substr(rest, RSTART + RLENGTH)
    }
    print done rest > ENVIRON["out"]
}

END { exit bad }
' "$template") || {
    rm -f "$tmp"
    echo "redis-entrypoint: not starting redis-server ($template)" >&2
    exit 1
}
mv -f "$tmp" "$rendered"

# redis-server needs the hashes only: it does not inherit the passwords.
for var in $vars; do
    unset "$var"
done
exec redis-server --aclfile "$rendered" "$@"
