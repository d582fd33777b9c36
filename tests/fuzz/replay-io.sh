#!/bin/sh
# Replays the I/O thread input path's seed corpus through the fuzz target (TAP).
exec "${TOP_BUILDDIR:-.}/tests/fuzz/replay_io" "${TOP_SRCDIR:-.}/tests/fuzz/corpus/io"
