# Sourced by the scripts: where the build goes. A target directory outside the clone is
# reused across clones and CI runs on one machine; a fresh machine simply builds it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tarn/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
