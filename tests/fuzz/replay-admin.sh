#!/bin/sh
# Replays the admin protocol's seed corpus through the fuzz target (TAP).
exec "${TOP_BUILDDIR:-.}/tests/fuzz/replay_admin" "${TOP_SRCDIR:-.}/tests/fuzz/corpus/admin"
