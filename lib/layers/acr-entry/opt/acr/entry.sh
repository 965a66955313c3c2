#!/bin/sh
# acr's injected entrypoint: mounts the object storage named in ACR_MOUNTS, then runs the
# image's own entrypoint (ACR_ENTRY_CHAIN, which acr sets from the original config) with the
# container's arguments.
#
#   ACR_MOUNTS        comma-separated s3://BUCKET[/PREFIX] locations; each is mounted at
#                     $ACR_MOUNT_ROOT/BUCKET (default /mnt/s3/BUCKET)
#   ACR_S3_ENDPOINT   an S3-compatible endpoint URL (MinIO, R2, Ceph RGW), optional
#   ACR_FUSE          the FUSE client to use: mount-s3, geesefs, goofys or s3fs (default: the
#                     first of them on PATH)
#   ACR_ENTRY_CHAIN   the original entrypoint: one path, or a JSON list such as
#                     ["/usr/bin/tini","--"] (strings without escaped quotes)
set -eu

say() { printf 'acr-entry: %s\n' "$*" >&2; }

fuse_client() {
    if [ -n "${ACR_FUSE:-}" ]; then
        command -v "$ACR_FUSE" >/dev/null 2>&1 || { say "ACR_FUSE=$ACR_FUSE is not on PATH"; return 1; }
        printf '%s' "$ACR_FUSE"
        return 0
    fi
    for c in mount-s3 geesefs goofys s3fs; do
        if command -v "$c" >/dev/null 2>&1; then
            printf '%s' "$c"
            return 0
        fi
    done
    say "ACR_MOUNTS is set but no FUSE client (mount-s3, geesefs, goofys, s3fs) is on PATH"
    return 1
}

mount_one() {
    location=$1
    case "$location" in
        s3://?*) ;;
        *) say "'$location' in ACR_MOUNTS is not s3://BUCKET[/PREFIX]"; return 1 ;;
    esac
    rest=${location#s3://}
    bucket=${rest%%/*}
    prefix=
    [ "$rest" != "$bucket" ] && prefix=${rest#*/}
    client=$(fuse_client)
    dir=${ACR_MOUNT_ROOT:-/mnt/s3}/$bucket
    mkdir -p "$dir"
    endpoint=${ACR_S3_ENDPOINT:-}
    say "mounting $location at $dir with $client"
    case "$client" in
        mount-s3)
            set -- "$bucket" "$dir"
            [ -n "$prefix" ] && set -- --prefix "${prefix%/}/" "$@"
            [ -n "$endpoint" ] && set -- --endpoint-url "$endpoint" "$@"
            mount-s3 "$@" ;;
        geesefs|goofys)
            source=$bucket
            [ -n "$prefix" ] && source=$bucket:$prefix
            if [ -n "$endpoint" ]; then "$client" --endpoint "$endpoint" "$source" "$dir"; else "$client" "$source" "$dir"; fi ;;
        s3fs)
            source=$bucket
            [ -n "$prefix" ] && source=$bucket:/$prefix
            if [ -n "$endpoint" ]; then s3fs "$source" "$dir" -o "url=$endpoint"; else s3fs "$source" "$dir"; fi ;;
        *)
            "$client" "$location" "$dir" ;;
    esac
}

# ["/usr/bin/tini","--"] as shell words: '/usr/bin/tini' '--'
json_words() {
    printf '%s' "$1" | sed \
        -e "s/'/'\\\\''/g" \
        -e 's/^[[:space:]]*\[[[:space:]]*"//' \
        -e 's/"[[:space:]]*\][[:space:]]*$//' \
        -e "s/\"[[:space:]]*,[[:space:]]*\"/' '/g" \
        -e "s/^/'/" -e "s/\$/'/"
}

if [ -n "${ACR_MOUNTS:-}" ]; then
    old_ifs=$IFS
    IFS=,
    for location in $ACR_MOUNTS; do
        IFS=$old_ifs
        mount_one "$location"
    done
    IFS=$old_ifs
fi

chain=${ACR_ENTRY_CHAIN:-}
case "$chain" in
    '')
        if [ $# -eq 0 ]; then
            say "nothing to run: the image has no entrypoint and no command was given"
            exit 127
        fi
        exec "$@" ;;
    '['*)
        words=$(json_words "$chain")
        eval "set -- $words \"\$@\""
        exec "$@" ;;
    *)
        exec "$chain" "$@" ;;
esac
