# Sourced by the scripts that build images (scripts/test-images, scripts/debian-base,
# scripts/image): work directories that go away however the script ends, and noisy build steps
# that can be stopped whole.
#
# The sourcing script sets WORK_PREFIX (the work directories' name prefix) and defines `log`.
# Anything still mounted inside a work directory (an interrupted chroot) is unmounted before it
# goes, and the removal never crosses into another file system.

work_dirs=()
step=
cleanup() {
    local dir mounts mount tries=0
    if [ -n "$step" ]; then
        kill -TERM -- "-$step" 2>/dev/null || true
        while kill -0 -- "-$step" 2>/dev/null && [ $((tries += 1)) -le 50 ]; do
            sleep 0.1
        done
        kill -KILL -- "-$step" 2>/dev/null || true
        wait "$step" 2>/dev/null || true
    fi
    for dir in "${work_dirs[@]}"; do
        mounts=$(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
        for mount in $mounts; do
            umount "$mount" 2>/dev/null || umount -l "$mount" || true
        done
        rm -rf --one-file-system "$dir"
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Creates a work directory under $2 (default: the temporary directory) and stores its path in
# the variable named $1.
new_work_dir() {
    local -n dir=$1
    dir=$(mktemp -d "${2:-${TMPDIR:-/tmp}}/$WORK_PREFIX.XXXXXX")
    work_dirs+=("$dir")
}

# Runs a noisy build step with its output in $build_log, which is shown only when it fails.
# The step gets a process group of its own and is waited for in the background, so an
# interrupted build stops it, and everything it started, at once rather than when it ends.
quietly() {
    setsid "$@" >>"$build_log" 2>&1 </dev/null &
    step=$!
    if ! wait "$step"; then
        step=
        log "failed: $*"
        tail -n 60 "$build_log" >&2
        return 1
    fi
    step=
}
